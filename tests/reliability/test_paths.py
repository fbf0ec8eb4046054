"""Files and the terminal: unusable paths, a full disk, untrusted folders, leftover temp files,
control characters, secrets in the wrong variable, Windows-written files, a non-UTF-8 stdout.

Each unusable path is one line naming the path and the fix, exit code 6, and no report
written. A small real tmpfs gives the full disk and the read-only folder where this process
may mount one (root in CI); elsewhere those two cases skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from site_support import CLI, Site, process_env, run_cli_inprocess

from m365guard.errors import ExitCode
from m365guard.logs import masked, printable, setup_logging


def nightly(site: Site, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    done = run_cli_inprocess(["nightly", "--config", str(site.config)], site.env, capsys,
                             monkeypatch)
    return done.code, done.stderr


def set_output(site: Site, value: str, log_file: str | None = None) -> None:
    text = site.config.read_text().replace('dir = "out"', f"dir = {value!r}")
    if log_file is not None:
        text = text.replace("[output]\n", f"[output]\nlog_file = {log_file!r}\n")
    site.config.write_text(text)


def assert_one_line(code: int, stderr: str, *words: str) -> None:
    assert code == ExitCode.CONFIG_ERROR, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, (word, stderr)


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                              str(where)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_output_folder_that_is_a_file(site: Site, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    site.out.write_text("not a folder")
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.out), "is a file")


def test_output_folder_under_proc(site: Site, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    set_output(site, "/proc/m365guard-out", log_file=str(site.root / "m365guard.log"))
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, "/proc/m365guard-out", "/proc")


def test_output_folder_that_is_a_symlink_is_not_followed(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = site.root / "elsewhere"
    elsewhere.mkdir()
    site.out.symlink_to(elsewhere)
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.out), "symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_output_folder_writable_by_everyone_is_not_trusted(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    site.out.mkdir()
    site.out.chmod(0o777)
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.out), "writable by every user", "chmod o-w")
    assert list(site.out.iterdir()) == []


def test_read_only_output_folder(site: Site, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with tmpfs(site.out, "ro", "size=1m"):
        code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.out), "read-only file system")


def test_full_disk_is_one_line_and_nothing_half_written(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    set_output(site, "out", log_file=str(site.root / "m365guard.log"))
    with tmpfs(site.out, "size=64k", "mode=0700") as out:
        filler = out / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        filler.write_bytes(filler.read_bytes()[:-2048])  # room for the probe, not a report
        code, err = nightly(site, capsys, monkeypatch)
        assert_one_line(code, err, "disk is full")
        assert sorted(p.name for p in out.iterdir()) == ["filler"]  # no report, no temp file
        filler.unlink()
        again, again_err = nightly(site, capsys, monkeypatch)
        assert again == ExitCode.NEW_HIGH_FINDINGS, again_err
        assert list(out.glob("findings-*.csv"))


def test_missing_state_folder_is_made_owner_only(site: Site, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    site.config.write_text(site.config.read_text().replace(
        'path = "state/m365guard.db"', 'path = "state/deeper/m365guard.db"'))
    code, err = nightly(site, capsys, monkeypatch)
    assert code == ExitCode.NEW_HIGH_FINDINGS, err
    assert (site.state_dir / "deeper").stat().st_mode & 0o077 == 0


def test_state_folder_that_cannot_be_made(site: Site, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    site.state_dir.write_text("a file where the folder should be")
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.state_dir))
    assert not site.out.exists() or not list(site.out.glob("findings-*.csv"))


def test_no_usable_home_directory(site: Site, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No [state] path: the default is under the account's home, which is not a folder."""
    site.config.write_text(site.config.read_text().replace('path = "state/m365guard.db"\n', ""))
    home = site.root / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(home), "[state] path")


def test_the_log_never_appends_to_another_file(site: Site, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    precious = site.root / "precious.txt"
    precious.write_text("keep me\n")
    site.out.mkdir(mode=0o700)
    (site.out / "m365guard.log").symlink_to(precious)
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, "m365guard.log", "symbolic link")
    (site.out / "m365guard.log").unlink()
    os.link(precious, site.out / "m365guard.log")  # a hard link: another name of that file
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, "m365guard.log", "hard link")
    assert precious.read_text() == "keep me\n"


def test_an_unwritable_log(site: Site, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    (site.root / "logs").mkdir()
    set_output(site, "out", log_file=str(site.root / "logs"))  # a folder, not a file
    code, err = nightly(site, capsys, monkeypatch)
    assert_one_line(code, err, str(site.root / "logs"))
    assert not list(site.out.glob("findings-*.csv"))


def test_leftover_temp_files_are_removed_by_the_next_run(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    site.out.mkdir(mode=0o700)
    old = site.out / ".findings-2026-12-01.csv.k1ll3d.tmp"
    old.write_text("half a report")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    code, err = nightly(site, capsys, monkeypatch)
    assert code == ExitCode.NEW_HIGH_FINDINGS, err
    assert not old.exists()
    assert not list(site.out.glob(".*.tmp"))


def test_control_characters_never_reach_the_terminal_or_the_log(tmp_path: Path) -> None:
    import logging

    log_file = tmp_path / "m365guard.log"
    setup_logging(log_file)
    try:
        logging.getLogger("m365guard.rules").warning(
            "rule %s on %s", "Fwd\n2026-12-02 00:00:00 INFO forged: all clear",
            "\x1b[2J\x1b]0;owned\x07subject\u202egnp.exe")
    finally:
        logger = logging.getLogger("m365guard")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
    text = log_file.read_text()
    assert text.count("\n") == 1 and "\x1b" not in text and "\u202e" not in text, text
    assert "\\n2026-12-02" in text and "\\x1b[2J" in text
    assert printable("a\tb\r\n") == "a\\tb\\r\\n"


def test_a_secret_in_the_wrong_variable_is_never_echoed(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "Zq8~x.Hd-3vLk_9TeSt-SeCrEt~AbCdEfGhIjK"
    for variable in ("M365GUARD_TENANT_ID", "M365GUARD_CLIENT_ID", "M365GUARD_CLOUD"):
        env = {**site.env, variable: secret}
        done = run_cli_inprocess(["nightly", "--config", str(site.config)], env, capsys,
                                 monkeypatch)
        assert done.code == ExitCode.CONFIG_ERROR, done.stderr
        assert secret not in done.stderr and "***" in done.stderr, done.stderr
        log = site.out / "m365guard.log"
        assert not log.exists() or secret not in log.read_text()
    assert masked(f"x {secret} y") == "x *** y"


def test_windows_written_policy_and_secret_files_work(
        site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        emulator: object) -> None:
    """policies.toml saved by Notepad (BOM, CRLF) and a secret file with BOM and CRLF."""
    text = site.config.read_text()
    site.config.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    secret_file = site.root / "client-secret.txt"
    secret_file.write_bytes(b"\xef\xbb\xbf" + emulator.settings.client_secret.encode()  # type: ignore[attr-defined]
                            + b"\r\n")
    site.env.pop("M365GUARD_CERT_PATH")
    site.env["M365GUARD_CLIENT_SECRET_FILE"] = str(secret_file)
    code, err = nightly(site, capsys, monkeypatch)
    assert code == ExitCode.NEW_HIGH_FINDINGS, err


def test_a_non_utf8_stdout_does_not_break_a_run(tmp_path: Path, site: Site) -> None:
    """The installed script with an ASCII-only stdout/stderr and a non-ASCII output path."""
    moved = tmp_path / "écoles"
    shutil.copytree(site.root, moved)
    site = Site(moved, site.env)
    set_output(site, "sortie-été")
    done = subprocess.run([str(CLI), "nightly", "--config", str(site.config), "--verbose"],
                          env=process_env({**site.env, "PYTHONIOENCODING": "ascii",
                                           "LC_ALL": "C"}),
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == ExitCode.NEW_HIGH_FINDINGS, done.stderr[-2000:]
    assert b"Traceback" not in done.stderr
    assert b"findings-" in done.stdout and b"writing reports to" in done.stderr
