"""Reading callgrind's dumps: each tagged dump's total, by tag."""

from __future__ import annotations

from pathlib import Path

from tests.bench.instructions import _dumped


def _dump(path: Path, tag: str, total: int) -> None:
    path.write_text(f"# callgrind format\nversion: 1\ncmd: python\ndesc: Trigger: dump {tag}\n"
                    f"events: Ir\nfl=x.c\nfn=f\n1 {total}\ntotals: {total}\n")


def test_each_tagged_dump_is_read_by_its_tag(tmp_path: Path) -> None:
    _dump(tmp_path / "callgrind.42.out.1", "class0", 270_000_000)
    _dump(tmp_path / "callgrind.42.out.2", "class1", 295_000_000)
    _dump(tmp_path / "callgrind.7.out.1", "class0", 1)  # another process's
    (tmp_path / "callgrind.42.out.3").write_text("truncated")
    assert _dumped(tmp_path, 42) == {"class0": 270_000_000, "class1": 295_000_000}
