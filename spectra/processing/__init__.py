"""The preprocessing core: pure numpy/scipy, vectorised over batches, no Django."""
