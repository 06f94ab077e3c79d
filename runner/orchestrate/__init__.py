"""Running a study file: session, scheduler, workers, the chain walk, Optuna searches, progress."""
