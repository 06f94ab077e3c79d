"""Rows for result-store tests, shared by the SQLite (test_store.py) and PostgreSQL
(test_postgres.py) suites so both backends are checked against the same data."""


def study(store, name="s", position=0) -> int:
    return store.ensure_study(plan="p", profile="default", name=name, position=position, kind="variants",
                              start_from=None, pin=None, pin_reason=None, base_config={"lr": 0.1})


def add(store, study_id, variant="a", seed=0, run_hash="h1", lr=0.1) -> bool:
    return store.add_trial(study_id, variant, seed, config={"lr": lr, "seed": seed}, config_hash=run_hash,
                           overrides={"lr": lr})


def epoch_row(epoch: int, grader: float = 1.0) -> dict:
    return {"epoch": epoch, "step": 2 * epoch, "wall_time_s": float(epoch), "iou": 50.0, "si_logrmse": 20.0,
            "grader": grader, "loss": 1.0, "loss_semseg": 0.5, "loss_depth": 0.5, "lr": 0.1,
            "iou_per_class_json": "[]"}
