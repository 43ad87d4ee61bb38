"""Resource classes the assets need; which instances are used is decided in orchestration."""


import dagster as dg

from lakehouse.settings import LakehouseSettings


class LakehouseResource(dg.ConfigurableResource):
    """Where the lakehouse lives. Empty fields fall back to the environment / embedded default."""

    uri: str = ""
    landing_uri: str = ""
    duckdb_path: str = ""
    data_dir: str = ""

    def settings(self) -> LakehouseSettings:
        base = LakehouseSettings.from_env()
        return LakehouseSettings.build(
            uri=self.uri or base.uri,
            landing_uri=self.landing_uri or (None if self.uri else base.landing_uri),
            duckdb_path=self.duckdb_path or base.duckdb_path,
            data_dir=self.data_dir or base.data_dir,
        )
