"""A task of one's own for ablate, importing nothing of it: an MLP on scikit-learn's bundled digits."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hidden: int = Field(64, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0, lt=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.01, gt=0, le=10)
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=2048)
    seed: int = 0


metrics = {"val_accuracy": "max", "val_loss": "min"}
objective = "val_accuracy"


def fit(config, ctx):
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed split
    x, y = torch.tensor(x, dtype=torch.float32)[order] / 16.0, torch.tensor(y)[order]
    (xt, yt), (xv, yv) = (x[:1400], y[:1400]), (x[1400:], y[1400:])
    torch.manual_seed(config.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, config.hidden), torch.nn.ReLU(),
                                torch.nn.Dropout(config.dropout), torch.nn.Linear(config.hidden, 10))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[config.optimizer](model.parameters(), lr=config.lr)
    epoch, result, state = 0, None, ctx.load_checkpoint()
    if state is not None:  # resume where the last checkpoint left off
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), torch.set_rng_state(state["rng"])
        epoch, result = state["epoch"], state["result"]
    save = lambda: ctx.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(),  # noqa: E731
                                        "epoch": epoch, "result": result, "rng": torch.get_rng_state()})
    steps = (len(yt) + config.batch_size - 1) // config.batch_size
    while epoch < config.epochs:
        if ctx.should_stop():
            return save()
        model.train()
        perm = torch.randperm(len(yt), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        for i, batch in enumerate(perm.split(config.batch_size)):
            loss = torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            ctx.log_step(epoch * steps + i + 1, loss=loss.item())
        with torch.no_grad():
            logits = model.eval()(xv)
        epoch += 1
        result = {"val_accuracy": 100.0 * (logits.argmax(1) == yv).float().mean().item(),
                  "val_loss": torch.nn.functional.cross_entropy(logits, yv).item()}
        ctx.log_epoch(epoch, result)
        save()
    return result
