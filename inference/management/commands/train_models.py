import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.labels import LABELS
from inference.models import ReferenceCatalog
from inference.network.config import NetworkConfig, TrainingConfig
from inference.network.evaluation import EVALUATION_SNR_EDGES
from inference.selectors import TrainingSetError
from inference.services.training import models_train


class Command(BaseCommand):
    help = (
        "Train the formal and alternate SPCANet models on the catalog's spectra with labels from a reference "
        "catalog, evaluate them on the held-out test set, and register both as model versions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reference", required=True, help="Name of an imported reference catalog.")
        parser.add_argument("--prefix", required=True, help="Model names become PREFIX-formal and PREFIX-alternate.")
        parser.add_argument("--split-by", choices=["star", "spectrum"], default=TrainingConfig.split_by,
                            help="star (default): all spectra of a star on one side; spectrum: the paper's split.")
        parser.add_argument("--max-epochs", type=int, default=TrainingConfig.max_epochs)
        parser.add_argument("--patience", type=int, default=TrainingConfig.patience)
        parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
        parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
        parser.add_argument("--lr-reduce-factor", type=float, default=TrainingConfig.lr_reduce_factor,
                            help="The learning rate is multiplied by this when the CV loss stalls (1: constant).")
        parser.add_argument("--lr-reduce-patience", type=int, default=TrainingConfig.lr_reduce_patience,
                            help="Epochs without a better CV loss before the learning rate is reduced.")
        parser.add_argument("--seed", type=int, default=TrainingConfig.seed)
        parser.add_argument("--filters", type=int, nargs=2, default=list(NetworkConfig.filters))
        parser.add_argument("--kernel-size", type=int, default=NetworkConfig.kernel_size)
        parser.add_argument("--dense-units", type=int, nargs=2, default=list(NetworkConfig.dense_units))
        parser.add_argument("--dropout", type=float, default=NetworkConfig.dropout)
        parser.add_argument("--l2", type=float, default=NetworkConfig.l2, help="L2 penalty on the dense weights.")
        parser.add_argument("--pool-size", type=int, default=NetworkConfig.pool_size,
                            help="Pixels averaged per branch before the dense layers (1: none).")
        parser.add_argument("--standardise", choices=["global", "pixel"], default=NetworkConfig.standardise)
        parser.add_argument("--input-noise", type=float, default=NetworkConfig.input_noise,
                            help="Gaussian noise on the standardised inputs while training (0: none).")
        parser.add_argument("--ridge-lambdas", type=float, nargs="*", default=list(NetworkConfig.ridge_lambdas),
                            help="Penalties tried for the linear part, chosen per label on the CV spectra "
                                 "(none given: no linear part).")
        parser.add_argument("--fill-components", type=int, default=NetworkConfig.fill_components,
                            help="Components of the PCA model that fills masked pixels (0: masked pixels stay flux 1).")
        parser.add_argument("--fill-outlier-sigma", type=float, default=NetworkConfig.fill_outlier_sigma,
                            help="Pixels this many sigma off that model are filled too (0: none).")

    def handle(self, *args, reference, prefix, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            catalog = ReferenceCatalog.objects.get(name=reference)
        except ReferenceCatalog.DoesNotExist as error:
            raise CommandError(f"no reference catalog {reference!r}; import one with import_reference_labels") from error
        try:
            network = NetworkConfig(filters=tuple(options["filters"]), kernel_size=options["kernel_size"],
                                    dense_units=tuple(options["dense_units"]), dropout=options["dropout"],
                                    l2=options["l2"], pool_size=options["pool_size"],
                                    standardise=options["standardise"], input_noise=options["input_noise"],
                                    ridge_lambdas=tuple(options["ridge_lambdas"]),
                                    fill_components=options["fill_components"],
                                    fill_outlier_sigma=options["fill_outlier_sigma"])
            training = TrainingConfig(split_by=options["split_by"], max_epochs=options["max_epochs"],
                                      patience=options["patience"], batch_size=options["batch_size"],
                                      learning_rate=options["learning_rate"],
                                      lr_reduce_factor=options["lr_reduce_factor"],
                                      lr_reduce_patience=options["lr_reduce_patience"], seed=options["seed"])
        except ValueError as error:
            raise CommandError(str(error)) from error
        bars: dict[str, tqdm] = {}

        def on_epoch(role: str, epoch: int, logs: dict) -> None:
            if role not in bars:
                for bar in bars.values():
                    bar.close()
                bars[role] = tqdm(total=training.max_epochs, unit="epoch", desc=role, file=self.stderr, disable=None)
            bars[role].update(1)
            loss, val_loss = logs.get("loss", float("nan")), logs.get("val_loss", float("nan"))
            bars[role].set_postfix(loss=f"{loss:.3f}", val_loss=f"{val_loss:.3f}")
            if bars[role].disable:  # no terminal: one line per epoch instead of a bar
                self.stdout.write(f"{role} epoch {epoch + 1}: loss {loss:.4f}, val_loss {val_loss:.4f}")

        try:
            trained = models_train(catalog=catalog, name_prefix=prefix, network=network, training=training,
                                   on_epoch=on_epoch, log=lambda message: self.stdout.write(message))
        except (TrainingSetError, ValueError) as error:
            raise CommandError(str(error)) from error
        finally:
            for bar in bars.values():
                bar.close()
        for version in (trained.formal, trained.alternate):
            self.stdout.write(self._summary(version))

    @staticmethod
    def _summary(version) -> str:
        metrics = version.metrics
        lines = [f"\n{version.name}: {metrics['training']['epochs']} epochs, "
                 f"{metrics['training']['seconds']:.1f} s, test set {metrics['training']['n_test']} spectra "
                 f"(S/N > {EVALUATION_SNR_EDGES[0]:.0f})",
                 f"{'label':<8}{'bias':>10}{'sigma':>10}{'z spread':>10}"]
        linear = metrics["training"].get("linear")
        if linear:
            lines.insert(1, f"linear part: ridge fitted in {linear['seconds']:.1f} s, penalties per label "
                            + " ".join(f"{value:g}" for value in linear["lambdas"]))
        for label in LABELS:
            overall = metrics["overall"][label.field]
            z = metrics["calibration"][label.field]["z_std"]
            if overall["n"]:
                lines.append(f"{label.column:<8}{overall['bias']:>10.4f}{overall['std']:>10.4f}{z:>10.2f}")
        cells = metrics.get("calibration_cells") or []
        if cells:
            verdicts = [[value.get("verdict") for value in cell["labels"].values()] for cell in cells]
            met = sum(all(v == "met" for v in row) for row in verdicts)
            beyond = [f"S/N {cell['snr_bin']} {cell['kind']}s {cell['masked_bin']} masked ("
                      + ", ".join(name for name, value in cell["labels"].items()
                                  if value.get("verdict") == "missed beyond noise") + ")"
                      for cell, row in zip(cells, verdicts, strict=True) if "missed beyond noise" in row]
            lines.append(f"calibration cells (S/N x kind x masked fraction, test set): {met} of {len(cells)} within "
                         f"the goal for every label; {len(beyond)} miss it beyond their sampling noise"
                         + (": " + "; ".join(beyond) if beyond else ""))
        return "\n".join(lines)
