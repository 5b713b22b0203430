"""``helm install``, ``upgrade`` and ``uninstall`` of charts/pushrelay on the devstack.

The release's life cycle on the API server (no node needed: no pod runs):
install creates every object for real, an upgrade with a changed setting
changes the pods' config checksum, uninstall removes everything, cluster-scoped
objects too. The chart installed on a real node, with pods running and a push
through its ingress Service, is ``tests/node/test_helm_node.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from tests.integration.conftest import unique
from tests.integration.helm_support import (
    Release,
    cluster_scoped_of,
    helm,
    restricted_namespace,
    values_file,
)


@pytest.fixture
async def release(kube: ApiClient, devstack_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Release]:
    async with restricted_namespace(kube, "rel") as namespace:
        yield Release(helm(tmp_path_factory.mktemp("helm-install")), unique("hl"), namespace,
                      devstack_env["KUBECONFIG"])


async def test_install_upgrade_uninstall_on_the_api_server(
    kube: ApiClient, release: Release, tmp_path: Path,
) -> None:
    """The release's life cycle with real writes (no node needed: no pod runs).

    ``helm install`` creates every object (server-side validation and admission
    for real, Helm's ownership records); ``helm upgrade`` with a changed setting
    changes the ConfigMap and the pods' config checksum, so they would roll;
    ``helm uninstall`` removes everything, cluster-scoped objects included.
    """
    base = {"kafka": {"topicReplication": 1}}
    await release.install(values_file(tmp_path, base))
    try:
        ns = f"/namespaces/{release.namespace}"
        config_path = f"/api/v1{ns}/configmaps/{release.name}-pushrelay-config"
        deployments_path = f"/apis/apps/v1{ns}/deployments"

        async def checksums() -> dict[str, str]:
            items = (await request_json(kube, "GET", deployments_path))["items"]
            return {d["metadata"]["name"]:
                    d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                    for d in items}

        before = await checksums()
        assert sorted(before) == [f"{release.name}-pushrelay-{c}"
                                  for c in ("ingress", "refresher", "router")]
        assert len(await cluster_scoped_of(kube, release.name)) == 8  # 3 roles, 3 bindings,
        # the refresher guard's policy and its binding
        assert "STATUS: deployed" in await release.run("status", release.name)

        await release.upgrade(values_file(tmp_path, {**base, "logLevel": "DEBUG"}))
        config = await request_json(kube, "GET", config_path)
        assert config["data"]["PUSHRELAY_LOG_LEVEL"] == "DEBUG"
        after = await checksums()
        assert all(after[name] != before[name] for name in before)
    finally:
        await release.uninstall()
    assert await cluster_scoped_of(kube, release.name) == []
    remaining = await request_json(kube, "GET", f"/apis/apps/v1/namespaces/{release.namespace}"
                                   "/deployments")
    assert remaining["items"] == []
