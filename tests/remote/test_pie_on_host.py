"""``corral host`` serves PIE's protocol at /v1/ws, beside its own, with its token."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from pie_client import PieClient

from .pie_helpers import PieServer
from .test_pie import add, run

TOKEN = "host-pie-token-0123456789"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = PieServer(tmp_path_factory.mktemp("host-pie"), token=TOKEN, host=True)
    yield srv
    srv.stop()


def test_corral_host_runs_pie_programs_with_its_token(host):
    async def main():
        async with PieClient(host.url, identity=f"acme/alice:{TOKEN}") as c:
            first = await (await c.run(add, a=2, b=3)).result()
            return first, await c.list_processes()

    assert run(main()) == ({"sum": 5}, [])


def test_corral_host_refuses_pie_clients_without_its_token_or_from_another_origin(host):
    async def no_token():
        async with PieClient(host.url, identity="acme/alice") as c:
            await asyncio.wait_for(c.ping(), 30)

    with pytest.raises(Exception, match="authentication required"):
        run(no_token())

    async def cross_site():
        async with websockets.connect(host.url + "/v1/ws", origin="http://evil.example",
                                      additional_headers={"x-pie-identity": f"a:{TOKEN}"}):
            pass

    with pytest.raises(websockets.InvalidStatus) as info:
        run(cross_site())
    assert info.value.response.status_code == 403
    assert TOKEN not in host.log.read_text()
