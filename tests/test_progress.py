"""Progress lines: at least one every EVERY_SECONDS in a long phase, none in a short one, plain lines only."""
from racecomp import progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_long_phase_prints_rate_and_eta_every_ten_seconds_and_a_short_one_nothing(capsys):
    clock = FakeClock()
    bar = progress.Progress("eval", 100, clock=clock)
    for _ in range(50):  # 50 images at 0.5 s each: 25 s
        clock.now += 0.5
        bar.update()
    clock.now += 25.0
    bar.update(50)
    bar.finish()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[eval] 20/100 images (20%), 2.0 images/s, ETA 0:00:40",
                     "[eval] 40/100 images (40%), 2.0 images/s, ETA 0:00:30",
                     "[eval] 100/100 images (100%), 2.0 images/s, 0:00:50 in all"]
    quick = progress.Progress("dev", 10, clock=clock)
    quick.update(10)
    quick.finish()
    silent = progress.Progress("rank 1", 10, clock=clock, enabled=False)
    clock.now += 60
    silent.update(10)
    silent.finish()
    assert capsys.readouterr().out == ""


def test_format_seconds():
    assert progress.format_seconds(3725.9) == "1:02:05"


def test_training_prints_a_line_when_steps_are_slow_even_between_log_every_steps(tmp_path, monkeypatch, capsys):
    import torch

    from racecomp import engine
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [{"x": torch.ones(4, 2)} for _ in range(3)]

    def compute_loss(net, batch):
        return net(batch["x"]).pow(2).mean(), {}

    def fit(log_every):
        settings = engine.TrainingSettings(epochs=1, log_every=log_every)
        engine.Trainer(model, compute_loss, optimizer, str(tmp_path), settings, 3).fit(batches)
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train]")]

    assert fit(log_every=1000) == []  # fast steps: only every log_every steps
    monkeypatch.setattr(engine, "EVERY_SECONDS", 0.0)  # every step counts as slow
    assert len(fit(log_every=1000)) == 3
    assert fit(log_every=0) == []  # 0: no step lines at all
