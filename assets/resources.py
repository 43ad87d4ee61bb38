"""Resource classes the assets need; which instances are used is decided in orchestration."""


import dagster as dg

from lakehouse.io.settings import LakehouseSettings


class LakehouseResource(dg.ConfigurableResource):
    """Where the lakehouse lives. Empty fields fall back to the environment / embedded default."""

    uri: str = ""
    landing_uri: str = ""
    duckdb_path: str = ""
    data_dir: str = ""
    mapping: str = ""  # a bring-your-own-data mapping file; empty: LAKEHOUSE_MAPPING, else none
    # a landing day whose manifest is still missing (or disagrees with its files) this long after
    # its first file landed is reported to ops/remediation_log by the landing sensor
    landing_grace_hours: float = 6.0

    def settings(self) -> LakehouseSettings:
        base = LakehouseSettings.from_env()
        return LakehouseSettings.build(
            uri=self.uri or base.uri,
            landing_uri=self.landing_uri or (None if self.uri else base.landing_uri),
            duckdb_path=self.duckdb_path or base.duckdb_path,
            data_dir=self.data_dir or base.data_dir,
            mapping_path=self.mapping or base.mapping_path,
        )

    def dataset(self):
        """The `ml.datasets.Dataset` these settings describe (the simulator's or a mapping's):
        what every asset asks instead of which data it is."""
        from ml.datasets import dataset_for

        return dataset_for(self.settings())


class MlflowResource(dg.ConfigurableResource):
    """Where runs and models are tracked. Empty tracking_uri: MLFLOW_TRACKING_URI, else a SQLite
    store with its artifacts under the lakehouse data folder (`<data_dir>/mlflow`)."""

    tracking_uri: str = ""
    experiment: str = "class-recommender"
    registered_model: str = "class_recommender"
    ui_url: str = "http://127.0.0.1:5000"

    def tracking(self, settings: LakehouseSettings):
        import os

        from ml import tracking as mlt
        from ml.workflow import Tracking

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        artifact_root = None
        if not uri:
            uri = mlt.default_tracking_uri(settings.data_dir)
            artifact_root = mlt.default_artifact_root(settings.data_dir)
        return Tracking(tracking_uri=uri, artifact_root=artifact_root, experiment=self.experiment,
                        registered_model=self.registered_model, ui_url=self.ui_url)
