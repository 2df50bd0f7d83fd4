"""Verification study: train (optionally) a face-recognition model with a margin loss, score it per race on RFW.

    python run_verify.py                                     # demo identities -> demo RFW
    python run_verify.py --arch iresnet50 --weights backbone.pth --epochs 0 --rfw /data/RFW
    python run_verify.py --arch resnet50 --init-from runs/upscale/resnet50-x2-... --finetune bn_affine
    python run_verify.py --probe gender --bias-probe --probe-data /data/FairFace

Writes to --out: args.json, checkpoint.pth (when trained), optionally probe_gender.csv and bias_probe.csv
(FairFace probes of the final backbone, see racecomp.probes), per_pair.csv (every pair's cosine score, so
any metric can be recomputed) and per_race.csv (written last: a finished run). Verification rates are
percentages; probe F1, accuracies and association scores are fractions.
"""
import argparse
import copy
import os
import time

import torch

from racecomp import (cli, datasets, engine, facenets, files, margin_heads, probes, toydata, upscalers,
                      verification)
from racecomp.races import RFW_RACES, parse_race, slug


def get_args_parser(add_help=True):
    parents = [cli.minority_parser("identity folders <Race>/<identity>/*.jpg for training (BUPT layout); "
                                   "default: the built-in synthetic demo identities"),
               cli.training_parser(), cli.output_parser()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=parents, add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # AdamW at 2e-3 for 5 epochs: on the demo identities this reaches ~80-90% RFW-style accuracy in ~2 min on
    # 2 CPU cores; fewer steps leave BatchNorm running statistics dominated by their initial values.
    parser.set_defaults(lr=2e-3, epochs=5, batch_size=16, warmup_steps=5)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=facenets.FACE_MODEL_NAMES, default="mobilefacenet",
                       help="face-recognition backbone")
    model.add_argument("--embedding-size", type=int, default=512, help="embedding dimension")
    model.add_argument("--weights", default=None, help="local state dict to start from (arcface_torch "
                       "backbone.pth for iresnet/mobilefacenet, or a RaceComp checkpoint)")
    model.add_argument("--init-from", default=None, help="upscaler run folder whose encoder initialises a "
                       "resnet50/FastViT backbone (transfer from upscaling to recognition)")
    model.add_argument("--margin", choices=("arcface", "cosface"), default="arcface",
                       help="margin loss: arcface (s 64, m 0.5) or cosface (s 64, m 0.35)")
    data = parser.add_argument_group("evaluation data")
    data.add_argument("--rfw", default=None, help="RFW root (test/data, test/txts); default: demo RFW")
    data.add_argument("--races", default="all", help="comma-separated RFW races to score (slugs) or all")
    data.add_argument("--align", action="store_true", help="align RFW images with the 5-point ArcFace template "
                      "from <Race>_lmk.txt (for unaligned copies)")
    data.add_argument("--image-size", type=int, default=112, help="face crop size in px")
    data.add_argument("--allow-overlap", action="store_true", help="train even if training identities appear "
                      "in evaluated RFW pairs (reported in args.json)")
    evaluate = parser.add_argument_group("evaluation")
    evaluate.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-2], help="target false-accept "
                          "rates for TAR@FAR; the first also sets the global TPR/FPR threshold")
    evaluate.add_argument("--no-flip", action="store_true", help="score without the flip test")
    evaluate.add_argument("--eval-batch-size", type=int, default=64, help="images per evaluation batch")
    probe = parser.add_argument_group("probes (FairFace)")
    probe.add_argument("--probe", choices=("none", "gender"), default="none", help="gender: linear gender head "
                       "on the final embeddings (FairFace train), per-race F1 on FairFace val -> probe_gender.csv")
    probe.add_argument("--bias-probe", action="store_true", help="association scores of FairFace val race and "
                       "race x gender sets before vs after training, and their Bias Transfer Score -> bias_probe.csv")
    probe.add_argument("--probe-data", default=None, help="FairFace root (fairface_label_{train,val}.csv); "
                       "default: the built-in synthetic demo FairFace (random gender labels: chance-level probe)")
    probe.add_argument("--probe-steps", type=int, default=100, help="L-BFGS iterations (full batch) of the "
                       "gender probe's logistic regression, at most")
    return parser


def default_out(args):
    minority = f"{slug(args.minority)}-w{args.weight:g}" if args.minority != "none" else "balanced"
    source = "init-upscaler" if args.init_from else ("weights" if args.weights else "scratch")
    return os.path.join("runs", "verify", f"{args.arch}-{source}-{args.finetune}-{minority}-seed{args.seed}")


def subsample_identities(records, minority, weight, seed):
    """Keep a seeded fraction `weight` of the identities of race `minority` (all their images), all others.

    Identities, not images, are dropped: a recognition model is under-exposed to a group by meeting
    fewer of its people (the BUPT-Balancedface study's notion of imbalance).
    """
    if minority is None:
        return records
    ids = sorted({r.identity for r in records if r.race == minority})
    if not ids:
        raise ValueError(f"--minority {minority}: no training identities of that race")
    keep_count = max(1, round(weight * len(ids)))
    generator = torch.Generator().manual_seed(seed)
    kept = {ids[i] for i in torch.randperm(len(ids), generator=generator)[:keep_count].tolist()}
    return [r for r in records if r.race != minority or r.identity in kept]


def identity_loss(head, labels):
    """compute_loss for engine.Trainer: margin-head cross-entropy, logits in fp32 (the head ensures it)."""
    def compute_loss(model, batch):
        targets = labels.to(batch["image"].device)[batch["index"]]
        logits = head(model(verification.to_model_range(batch["image"])), targets)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        return loss, {}
    return compute_loss


def build_model(args, device):
    model = facenets.get_model(args.arch, args.embedding_size)
    if args.weights:
        facenets.load_backbone_weights(model, args.weights)
        print(f"[model] {args.arch} weights from {args.weights}")
    if args.init_from:
        path = os.path.join(args.init_from, "best.pth")
        if not os.path.isfile(path):
            path = os.path.join(args.init_from, "checkpoint.pth")
        count = facenets.load_encoder_from_upscaler(model, files.load_checkpoint(path)["model"])
        print(f"[model] encoder initialised from upscaler {path} ({count} tensors)")
    return model.to(device)


def read_probe_data(args):
    """(root, train records or None, val records) of the FairFace probe data, or None without probes.

    Read and checked before training, so bad probe data fails the run before it spends any compute.
    """
    if args.probe == "none" and not args.bias_probe:
        return None
    root = args.probe_data if args.probe_data is not None else toydata.ensure_demo_data("fairface")
    train_records = datasets.read_fairface(root, "train") if args.probe == "gender" else None
    val_records = datasets.read_fairface(root, "val")
    if args.bias_probe:
        probes.bias_probe_sets(val_records)
    return root, train_records, val_records


def run_probes(args, probe_data, model, start_model, device, record, run_columns):
    """Write probe_gender.csv and/or bias_probe.csv for the trained `model`; results also go into `record`."""
    root, train_records, val_records = probe_data
    record["probe_data"] = root
    features = dict(batch_size=args.eval_batch_size, workers=args.workers, device=device)
    if args.probe == "gender":
        rows, summary = probes.gender_probe(model, train_records, val_records, args.image_size,
                                            steps=args.probe_steps, **features)
        files.write_csv(os.path.join(args.out, "probe_gender.csv"), [{**run_columns, **row} for row in rows])
        record["probe_gender"] = summary
        print(f"[probe] gender on {root}: val accuracy {summary['val_accuracy']:.4f}, F1 "
              f"({summary['positive_class']} positive) {summary['val_f1']:.4f}")
        for row in rows:
            print(f"  {row['race']:<16} n {row['n']:>5}  F1 in {row['f1_in']:.4f}  out {row['f1_out']:.4f}  "
                  f"gap {row['gap']:.4f}")
    if args.bias_probe:
        rows, score = probes.bias_probe(probes.extract_features(start_model, val_records, args.image_size, **features),
                                        probes.extract_features(model, val_records, args.image_size, **features),
                                        val_records)
        files.write_csv(os.path.join(args.out, "bias_probe.csv"), [{**run_columns, **row} for row in rows])
        record["bias_transfer_score"] = score
        print(f"[probe] Bias Transfer Score (Spearman over {len(rows)} comparisons): {score:.4f}")


def main(args):
    minority = parse_race(args.minority, RFW_RACES, allow_none=True)
    cli.check_weight(args.weight)
    if minority is None and args.weight != 1.0:
        raise ValueError("--weight needs --minority (a balanced run has no weight)")
    if args.epochs == 0 and not (args.weights or args.init_from):
        raise ValueError("--epochs 0 evaluates only: give --weights or --init-from (a random model scores ~50%)")
    if args.bias_probe and args.epochs == 0:
        raise ValueError("--bias-probe compares the backbone before and after training: needs --epochs > 0")
    if args.probe_steps < 1:
        raise ValueError(f"--probe-steps {args.probe_steps}: must be >= 1")
    races = RFW_RACES if args.races == "all" else tuple(parse_race(r, RFW_RACES) for r in args.races.split(","))
    args.out = os.path.abspath(args.out or default_out(args))
    device = cli.resolve_device(args.device)
    action = files.prepare_out_dir(args.out, args, overwrite=args.overwrite)
    if action == "skip":
        return None
    engine.seed_everything(args.seed)
    rfw_root = args.rfw if args.rfw is not None else toydata.ensure_demo_data("rfw")
    pairs = datasets.read_rfw(rfw_root, races)
    print(f"[data] RFW {rfw_root}: {len(pairs)} pairs over {', '.join(races)}")
    probe_data = read_probe_data(args)
    model = build_model(args, device)
    # The starting backbone, kept before training (and before a resume loads the checkpoint) for the bias probe.
    start_model = copy.deepcopy(model) if args.bias_probe else None
    record = files.run_record(args, study="verify", rfw_root=rfw_root, device=str(device))
    files.write_json(os.path.join(args.out, "args.json"), record)
    started = time.time()
    if args.epochs > 0:
        train_root = args.data if args.data is not None else toydata.ensure_demo_data("identities")
        all_records = datasets.read_identity_folders(train_root)
        overlap = datasets.check_identity_overlap(all_records, pairs, allow=args.allow_overlap)
        train_records = subsample_identities(all_records, minority, args.weight, args.seed)
        counts = {race: {"identities": len({r.identity for r in train_records if r.race == race}),
                         "images": sum(r.race == race for r in train_records)}
                  for race in RFW_RACES if any(r.race == race for r in all_records)}
        print(f"[data] identities {train_root}: {len(train_records)} of {len(all_records)} images kept "
              f"(minority {minority}, weight {args.weight}); epoch of {len(all_records)} draws")
        for race, count in counts.items():
            print(f"  {race:<10} identities {count['identities']:>5}  images {count['images']:>6}")
        # Equal compute: an epoch is as many draws as the full training set, whatever was dropped.
        sampler = datasets.MinoritySampler(train_records, None, 1.0, seed=args.seed, num_samples=len(all_records))
        items = [((r.race, r.identity, r.path), r.path) for r in train_records]
        loader = engine.make_loader(datasets.FaceImages(items, image_size=args.image_size, flip=True),
                                    args.batch_size, args.workers, device, sampler=sampler)
        labels = torch.tensor([r.class_index for r in train_records])
        n_classes = max(r.class_index for r in all_records) + 1
        head = margin_heads.get_margin_head(args.margin, args.embedding_size, n_classes).to(device)
        optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay, extra_modules=[head])
        stage_prefixes = upscalers.encoder_stage_prefixes(model) if args.unfreeze else ()
        trainer = engine.Trainer(
            model, identity_loss(head, labels), optimizer, args.out, device=device, amp=args.amp,
            accum_steps=args.accum_steps, clip_grad=args.clip_grad, epochs=args.epochs,
            steps_per_epoch=-(-len(loader) // args.accum_steps), warmup_steps=args.warmup_steps,
            finetune=args.finetune, unfreeze=engine.parse_unfreeze(args.unfreeze), stage_prefixes=stage_prefixes,
            log_every=args.log_every, extra_modules=[head], run_args=record["args"])
        if action == "resume":
            trainer.resume()
        trainer.fit(loader)
        record.update(train_root=train_root, realized_counts=counts, identity_overlap=overlap,
                      history=trainer.history, optimizer_steps=trainer.step,
                      skipped_fp16_steps=trainer.skipped_steps)
    record["train_seconds"] = time.time() - started
    files.write_json(os.path.join(args.out, "args.json"), record)
    run_columns = {"study": "verify", "arch": args.arch, "init": "upscaler" if args.init_from else
                   ("weights" if args.weights else "scratch"), "finetune": args.finetune,
                   "minority": minority or "none", "weight": args.weight, "seed": args.seed,
                   "code_version": record["code_version"]}
    if probe_data is not None:
        # Before per_race.csv: a finished run has every output.
        run_probes(args, probe_data, model, start_model, device, record, run_columns)
        files.write_json(os.path.join(args.out, "args.json"), record)
    table, threshold = verification.evaluate_to_dir(
        model, rfw_root, pairs, args.out, run_columns, args.eval_batch_size, args.workers, device, fars=args.far,
        flip=not args.no_flip, align=args.align, image_size=args.image_size)
    record["global_threshold"] = threshold
    files.write_json(os.path.join(args.out, "args.json"), record)
    verification.print_table(table, threshold, args.far[0])
    print(f"[rfw] results in {args.out}")
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
