"""The console as HTTP: what is served, with which headers, and the two API endpoints the
console router adds (``GET /api/v1/me``, ``GET /api/v1/audit/page``)."""

from __future__ import annotations

import gc
import re
import tracemalloc
from pathlib import Path

import httpx
import pytest

from garrison.server.console import ASSETS, CONTENT_SECURITY_POLICY, load_assets
from garrison.store.audit_log import read_audit
from tests.console.conftest import ConsoleFleet

SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "document.write")


def client(fleet: ConsoleFleet) -> httpx.Client:
    return fleet.served.client()


def last_seq(fleet: ConsoleFleet) -> int:
    with fleet.served.database.read() as conn:
        entries = list(read_audit(conn))
    return entries[-1].seq if entries else 0


def audit_since(fleet: ConsoleFleet, seq: int) -> list[tuple[str, str, str]]:
    with fleet.served.database.read() as conn:
        return [(e.actor, e.action, e.outcome) for e in read_audit(conn, after=seq)]


# -- pages and assets ---------------------------------------------------------------------


def test_root_and_bare_path_redirect_to_the_console(console_fleet: ConsoleFleet) -> None:
    with client(console_fleet) as http:
        for path in ("/", "/console"):
            response = http.get(path)
            assert response.status_code == 307
            assert response.headers["location"] == "/console/"
            assert response.headers["x-frame-options"] == "DENY"


def test_index_has_a_strict_policy_and_no_inline_code(console_fleet: ConsoleFleet) -> None:
    with client(console_fleet) as http:
        response = http.get("/console/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    html = response.text
    # Every script is an external module from this origin; no inline script, handler, style.
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="app.js">']
    assert "<style" not in html and "style=" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_every_shipped_asset_is_self_contained(console_fleet: ConsoleFleet) -> None:
    """No asset reaches another origin (operators are often offline) or builds markup
    from strings."""
    names = sorted(p.name for p in ASSETS.iterdir())
    assert {"index.html", "app.js", "console.css", "api.js", "ui.js"} <= set(names)
    with client(console_fleet) as http:
        for name in names:
            response = http.get(f"/console/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["cache-control"] == "no-cache"
            text = response.content.decode()
            assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
            assert "https://" not in text, name
            if name.endswith(".js"):
                assert response.headers["content-type"].startswith("text/javascript")
                for sink in SINKS:
                    assert sink not in text, f"{name} uses {sink}"


def test_assets_revalidate_with_their_etag(console_fleet: ConsoleFleet) -> None:
    with client(console_fleet) as http:
        first = http.get("/console/app.js")
        again = http.get("/console/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


@pytest.mark.parametrize(
    "path",
    [
        "/console/missing.js",
        "/console/..%2Fconsole.py",
        "/console/%2e%2e%2fapp.py",
        "/console/app.py",
        "/console/.hidden.js",
        "/console/App.JS",
        "/console/app.js%00.png",
    ],
)
def test_only_shipped_files_are_served(console_fleet: ConsoleFleet, path: str) -> None:
    seq = last_seq(console_fleet)
    with client(console_fleet) as http:
        response = http.get(path)
    assert response.status_code == 404
    assert b"garrison" not in response.content.lower()
    # A path that does not exist is not an admin action: nothing audited.
    assert audit_since(console_fleet, seq) == []


def test_the_asset_table_holds_exactly_the_shipped_files(tmp_path: Path) -> None:
    assets = load_assets()
    shipped = {p.name for p in ASSETS.iterdir() if p.is_file()}
    assert set(assets) == shipped and "app.js" in assets
    for name in ("../console.py", "console/app.js", "app", "", "app.js/", "index.html\x00"):
        assert assets.get(name) is None
    with pytest.raises(TypeError):
        assets["evil.js"] = assets["app.js"]  # type: ignore[index]  # read-only
    # Files of another type or name in the directory are never in the table.
    for name in ("ok.js", "notes.txt", "Upper.js", ".hidden.css"):
        (tmp_path / name).write_text("x")
    (tmp_path / "dir.js").mkdir()
    assert set(load_assets(tmp_path)) == {"ok.js"}


def test_unknown_asset_names_do_not_grow_the_server(console_fleet: ConsoleFleet) -> None:
    """Every distinct unknown name used to be remembered (functools.cache on the lookup):
    unauthenticated requests could grow the server without bound. 120 names of 12 KB
    (1.4 MB if kept) leave less than 0.3 MB behind in the server (what this test's own
    client keeps, e.g. urllib's parse cache, is not counted)."""
    names = [f"{i:05d}{'a' * 12_000}.js" for i in range(120)]
    server_side = [tracemalloc.Filter(False, __file__, all_frames=True)]
    with client(console_fleet) as http:
        assert http.get(f"/console/{names[0]}").status_code == 404  # warm up
        gc.collect()
        tracemalloc.start(30)
        try:
            before = tracemalloc.take_snapshot().filter_traces(server_side)
            for name in names:
                assert http.get(f"/console/{name}").status_code == 404
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(server_side)
        finally:
            tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 300_000, f"the server kept {grown} bytes after 120 unknown names"


# -- GET /api/v1/me -------------------------------------------------------------------------


def test_me_names_the_principal_role_and_permissions(console_fleet: ConsoleFleet) -> None:
    with console_fleet.served.api(console_fleet.operator) as api:
        response = api.get("/me")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "name": "olga",
        "role": "operator",
        "permissions": ["campaigns.manage", "devices.read", "devices.rollback", "fleet.manage"],
        "organization": "Test Fleet",
    }
    with console_fleet.served.api(console_fleet.auditor) as api:
        assert api.get("/me").json()["permissions"] == ["audit.read", "devices.read"]


def test_me_without_a_valid_token_is_refused_and_audited(console_fleet: ConsoleFleet) -> None:
    seq = last_seq(console_fleet)
    with console_fleet.served.api("gat_not-a-token") as api:
        response = api.get("/me")
    assert response.status_code == 401
    assert response.json()["detail"] == "authentication required: invalid or disabled API token"
    assert "Bearer" in response.json()["hint"]
    assert audit_since(console_fleet, seq) == [("anonymous", "api.authenticate", "refused")]


# -- GET /api/v1/audit/page -----------------------------------------------------------------


def test_audit_page_is_newest_first_and_pages_back_to_the_start(
    console_fleet: ConsoleFleet,
) -> None:
    with console_fleet.served.database.read() as conn:
        everything = [e.seq for e in read_audit(conn)]
    seen: list[int] = []
    before = None
    with console_fleet.served.api(console_fleet.auditor) as api:
        while True:
            params = {"limit": 7} if before is None else {"limit": 7, "before": before}
            response = api.get("/audit/page", params=params)
            assert response.status_code == 200, response.text
            assert response.headers["cache-control"] == "no-store"
            page = response.json()
            seen.extend(e["seq"] for e in page["entries"])
            before = page["next_before"]
            if before is None:
                break
    # Every entry that existed when paging started, once, newest first (paging itself adds
    # no entries: reading the audit log is not audited).
    assert seen[-len(everything) :] == sorted(everything, reverse=True)
    assert len(seen) == len(set(seen))


def test_audit_page_filters_actor_action_and_outcome(console_fleet: ConsoleFleet) -> None:
    with console_fleet.served.api("gat_wrong") as api:
        assert api.get("/me").status_code == 401  # one refused entry at least
    with console_fleet.served.api(console_fleet.auditor) as api:
        refused = api.get("/audit/page", params={"outcome": "refused", "limit": 500}).json()
        certs = api.get("/audit/page", params={"action": "cert.", "limit": 500}).json()
        batch = api.get("/audit/page", params={"actor": "sofia", "limit": 500}).json()
        wildcard = api.get("/audit/page", params={"actor": "%", "limit": 500}).json()
    assert refused["entries"] and all(e["outcome"] == "refused" for e in refused["entries"])
    assert {e["action"] for e in certs["entries"]} == {"cert.issue"}
    assert len(certs["entries"]) == len(console_fleet.devices)
    assert batch["entries"] and all("sofia" in e["actor"] for e in batch["entries"])
    # LIKE wildcards in a filter are literal characters.
    assert wildcard["entries"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 501}, "less than or equal to 500"),
        ({"before": 0}, "greater than or equal to 1"),
        ({"before": "x"}, "valid integer"),
        ({"outcome": "x" * 17}, "at most 16 characters"),
    ],
)
def test_audit_page_refuses_malformed_queries(
    console_fleet: ConsoleFleet, params: dict[str, int | str], message: str
) -> None:
    seq = last_seq(console_fleet)
    with console_fleet.served.api(console_fleet.auditor) as api:
        response = api.get("/audit/page", params=params)
    assert response.status_code == 422
    assert message in str(response.json()["detail"])
    assert audit_since(console_fleet, seq) == [("principal:aude", "audit.page", "refused")]


def test_audit_page_needs_the_audit_role(console_fleet: ConsoleFleet) -> None:
    seq = last_seq(console_fleet)
    with console_fleet.served.api(console_fleet.operator) as api:
        response = api.get("/audit/page")
    assert response.status_code == 403
    assert response.json()["detail"] == "role 'operator' may not audit.read"
    assert audit_since(console_fleet, seq) == [("principal:olga", "api.authorize", "refused")]
