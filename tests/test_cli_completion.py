"""dq completion: scripts written by shtab (an optional extra) for bash, zsh, fish and
tcsh, run in the real shells where they are installed: subcommands, options, option
values (--format <TAB>), directories after --dir; without shtab, one line naming the
install command, and the rest of dq unaffected."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue.cli import EXIT_FAILURE, EXIT_OK, main

pytestmark = pytest.mark.timeout(60)


def dq(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def script(shell: str) -> str:
    pytest.importorskip("shtab")
    code, text, err = dq("completion", shell)
    assert (code, err) == (EXIT_OK, "")
    return text


def shell_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def where(tmp_path: Path) -> Path:
    (tmp_path / "spool" / "q").mkdir(parents=True)
    (tmp_path / "some.txt").write_text("x")
    return tmp_path


def test_bash_completes_subcommands_options_values_and_directories(where: Path) -> None:
    bash = shell_or_skip("bash")
    (where / "dq.bash").write_text(script("bash"))
    probe = """source dq.bash
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"
      COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_dq dq; echo "${COMPREPLY[*]}"; }
t dq ca
t dq server --work
t dq stats --format ""
t dq list --dir sp
t dq completion ""
"""
    result = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=30,
                            cwd=where, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "cancel",
        "--workers",
        "table json prometheus",
        "spool",
        "bash zsh fish tcsh",
    ]


def test_fish_completes_subcommands_option_values_and_directories(where: Path) -> None:
    fish = shell_or_skip("fish")
    (where / "dq.fish").write_text(script("fish"))
    probe = (
        "source dq.fish; complete -C 'dq emp'; complete -C 'dq stats --format ';"
        " complete -C 'dq list --dir sp'"
    )
    result = subprocess.run([fish, "--no-config", "-c", probe], capture_output=True,
                            text=True, timeout=30, cwd=where, check=False)
    assert result.returncode == 0, result.stderr
    words = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert words == ["empty", "table", "json", "prometheus", "spool/"]


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_zsh_and_tcsh_scripts_parse_and_name_the_option_values(shell: str) -> None:
    text = script(shell)
    assert "prometheus" in text
    assert "cancel" in text
    if shell == "zsh":
        assert text.startswith("#compdef dq\n")
        checked = subprocess.run([shell_or_skip("zsh"), "-n"], input=text, capture_output=True,
                                 text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stderr


def test_the_script_is_for_dq_whatever_name_runs_it() -> None:
    result = subprocess.run([sys.executable, "-m", "dirqueue", "completion", "bash"],
                            capture_output=True, text=True, timeout=30, check=False)
    if "shtab" in result.stderr:
        pytest.skip("shtab is not installed")
    assert result.returncode == 0, result.stderr
    assert "complete -o bashdefault -F _shtab_dq dq\n" in result.stdout


def test_without_shtab_completion_says_how_to_get_it_and_dq_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "shtab", None)  # import shtab: ImportError.
    code, out, err = dq("completion", "bash")
    assert (code, out) == (EXIT_FAILURE, "")
    assert err == (
        "dq completion: completion scripts are written by shtab, which is not installed:"
        " pip install 'dirqueue[completion]' (or pip install shtab)\n"
    )
    # Nothing else needs it.
    assert dq("stats", "--dir", str(tmp_path / "q"), "--json")[0] == EXIT_FAILURE  # No queue.
    code, out, _ = dq("submit", "--dir", str(tmp_path / "q"), "--quiet", str(__file__))
    assert code == EXIT_OK
    assert out.count("\n") == 1


def test_shtab_is_an_extra_not_a_dependency() -> None:
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert "dependencies = []" in text
    assert 'completion = ["shtab>=' in text
