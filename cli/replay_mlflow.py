"""The arguments of `replay --to mlflow` and the call that runs it (replay/mlflow/push.py);
MLflow's client is the `mlflow` extra, imported only when the replay runs."""


def add_arguments(p):
    m = p.add_argument_group("--to mlflow (also --run, --follow, --dry-run, --json, --jobs, "
                             "--no-artifacts)")
    m.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI: http(s)://host:port, sqlite:///path.db, "
                        "postgresql://..., or a local folder")
    m.add_argument("--experiment", metavar="NAME",
                   help="MLflow experiment (default: each run's project; made if absent)")
    m.add_argument("--artifact-location", metavar="URI",
                   help="artifact root of an experiment the replay makes (default: the "
                        "tracking store's)")


def replay(args, store):
    # imported here, not when the parser is built: `replay --jobs N` starts its workers' fork
    # server before this process imports the store's modules (cli/main.py)
    from tfblackbox.schema.errors import MissingExtraError
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(
            "replay --to mlflow needs MLflow's client, which is not installed: pip install "
            "'tfblackbox[mlflow]' (mlflow-skinny; the full mlflow package works too)") from e
    from tfblackbox.replay.mlflow import push
    return push.main(push.MlflowReplay(
        store=store, tracking_uri=args.tracking_uri, experiment=args.experiment,
        artifact_location=args.artifact_location, runs=tuple(args.runs or ()),
        follow=args.follow, dry_run=args.dry_run, json=args.json,
        progress=not args.no_progress, jobs=args.jobs, artifacts=not args.no_artifacts))
