"""Survey-scale runs on Dask: plan on the client, fetch/decode/store on the workers under one
cluster-wide request budget, record every outcome in the manifest. The only part of the
package that imports ``distributed``."""

from .cluster import local_cluster
from .run import CutoutRun, fetch_cutouts
from .settings import RunSettings

__all__ = ["fetch_cutouts", "CutoutRun", "local_cluster", "RunSettings"]
