"""What a long run says into a log (no terminal, no bar): a line at each tenth, and once a
minute with the minutes left (trial 42: a tenth of a block-wise prediction took an hour)."""

from __future__ import annotations

from napari_medml.cli import progress


class _Bar:  # tqdm's stand-in in a log: disabled
    disable, n, total = True, 0, 0

    def update(self, k: int) -> None:
        self.n += k


def test_a_long_run_says_a_line_a_minute_with_the_minutes_left(monkeypatch, capsys) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    report = progress.bar_progress(_Bar(), "predicted", "windows", after_s=0.0)
    for done, at in ((1, 30), (2, 61), (3, 90), (4, 125), (100, 400), (200, 401)):  # 1000 windows, 3 s each
        clock[0] = 1000.0 + at
        report(done, 1000)
    lines = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["predicted 2 of 1000 windows (0%), about 507 min left",
                     "predicted 4 of 1000 windows (0%), about 519 min left",
                     "predicted 100 of 1000 windows (10%), about 60 min left",
                     "predicted 200 of 1000 windows (20%), about 27 min left"], lines
