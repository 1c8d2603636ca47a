"""Progress: a redrawn bar on a terminal, plain periodic lines in logs."""

import io

from skdd.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_n_steps_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(10, "pretrain", every=5, stream=out, images_per_step=64)
    for step in range(1, 11):
        p.update(step, loss_g=1.5)
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["1/10", "5/10", "10/10"]
    assert "loss_g=1.5" in lines[-1] and "img/s=" in lines[-1] and "\r" not in out.getvalue()


def test_bar_on_a_terminal_ends_with_newline():
    out = Tty()
    p = Progress(3, "distill", stream=out)
    for step in range(1, 4):
        p.update(step, loss=0.25)
    text = out.getvalue()
    assert text.startswith("\rdistill [") and "3/3" in text and text.endswith("\n")
