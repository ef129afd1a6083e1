"""SPCANet: the numerical core of the network (paper Fig. 5).

Pure numpy and Keras; no Django imports, so it can be trained, tested and benchmarked on
plain arrays. Keras (and with it TensorFlow) is imported only by ``architecture`` and
``estimator``, never by the lighter modules, so a web process that reads metrics or
splits does not start TensorFlow.
"""
