"""``garrison simulate`` against a served fleet, and the files it refuses."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from garrison.cli.sim_cmds import simulate
from tests.sim.conftest import SimFleet

app = typer.Typer()
app.command()(simulate)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_simulate_enrolls_and_cycles_until_the_duration(
    sim_fleet: SimFleet, tmp_path: Path
) -> None:
    batch = sim_fleet.shared.batch(3, model="gw-1")
    tokens = tmp_path / "tokens.csv"
    rows = ["serial,token", *[f"{s},{t}" for s, t in zip(batch.serials, batch.tokens, strict=True)]]
    tokens.write_text("\n".join(rows) + "\n")
    served = sim_fleet.shared.served
    options = {
        "--tokens": str(tokens),
        "--model": "gw-1",
        "--firmware": "1.0.0",
        "--server": served.url,
        "--root-ca": str(served.root_ca),
        "--poll-seconds": "0.3",
        "--duration": "1.5",
        "--status-every": "0.5",
    }
    code, output = run(*[part for pair in options.items() for part in pair])
    assert code == 0, output
    assert "3 devices enrolled" in output
    assert "firmware 1.0.0: 3" in output
    assert "errors 0" in output.splitlines()[-1]
    assert "(304: 0)" not in output.splitlines()[-1]  # idle polls answered 304


def test_simulate_refuses_files_that_are_not_token_lists(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("hello,world\n")
    code, output = run("--tokens", str(bad), "--model", "gw-1", "--server", "https://x:1")
    assert code == 2 and "not a tokens file" in output
    quota = tmp_path / "quota.csv"
    quota.write_text("serial,token\n,abc\n")
    code, output = run("--tokens", str(quota), "--model", "gw-1", "--server", "https://x:1")
    assert code == 2 and "without a serial" in output
    good = tmp_path / "good.csv"
    good.write_text("serial,token\nS-1,abc\n")
    code, output = run(
        "--tokens", str(good), "--model", "gw-1", "--server", "http://x:1", "--root-ca", str(good)
    )
    assert code == 2 and "https://" in output
