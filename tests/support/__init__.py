"""Importable test fixtures: processes and ports (helpers), resolver front-ends (frontends), an
etcd cluster (etcdcluster), statistics for shares (stats), an in-process DNS world (world)."""
