"""Upscaling study: train a super-resolution model on FairFace with one race under-represented, score it per race.

    python run_upscale.py --arch resnet50 --minority black --weight 0.2
    python run_upscale.py --arch bicubic                 # the floor that needs no learning

Without --data it runs on the built-in synthetic demo FairFace. Writes to --out: args.json,
checkpoint.pth / best.pth, per_image.csv, per_race.csv (written last: a finished run), sample grids.

Several GPUs or nodes: start the same command with torchrun, one process per GPU (DistributedDataParallel).
--batch-size is per process, so the global batch is batch-size x processes x accum-steps.

    torchrun --standalone --nproc_per_node 4 run_upscale.py --arch resnet50 --batch-size 4
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \
        --rdzv_endpoint host0:29500 run_upscale.py ...      # the same with --node_rank 1 on the second node

Each process uses cuda:LOCAL_RANK (--device auto or cuda; gloo on CPU); the sampler's global epoch order
and flips are the same whatever the number of processes; evaluation is sharded over processes and
gathered; only rank 0 writes files. --out (and --data) must be on a file system every node shares.
A run folder records its process count (world_size), and resuming it with another count is refused.
"""
import argparse
import os
import time

import torch

from racecomp import cli, datasets, distributed, engine, evaluation, files, losses, upscalers, upscaling
from racecomp.races import FAIRFACE_RACES, parse_race, slug


def get_args_parser(add_help=True):
    parents = [cli.minority_parser("FairFace root (fairface_label_train.csv, train/, val/); default: the "
                                   "built-in synthetic demo data"),
               cli.training_parser(), cli.output_parser()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=parents, add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=upscalers.ARCH_NAMES, default="resnet50",
                       help="encoder of the UNet ('fastvit' = fastvit_sa24), or bicubic (no training)")
    model.add_argument("--scale", type=int, choices=upscalers.SCALES, default=2, help="upscaling factor "
                       "(2: 112->224, 4: 56->224 on FairFace)")
    model.add_argument("--upsampler", choices=upscalers.UPSAMPLERS, default="pixelshuffle",
                       help="sub-pixel convolution, interpolation + conv, or over-scale then down-scale")
    model.add_argument("--image-cache", action="store_true", help="decode the training images once into a "
                       "memory-mapped uint8 cache under $RACECOMP_CACHE/imagecache (rebuilt when the images "
                       "change; the same items as JPEG decoding), so epochs are not bound by JPEG decoding")
    model.add_argument("--hr-size", type=int, default=None, help="high-resolution size in px (default: the "
                       "images' native size, 224 for FairFace's 0.25-margin release)")
    model.add_argument("--pretrained", action="store_true", help="start the encoder from timm ImageNet weights")
    model.add_argument("--pretrained-path", default=None, help="local file of those weights (offline)")
    loss = parser.add_argument_group("loss")
    loss.add_argument("--pixel-loss", choices=("l1", "charbonnier"), default="l1", help="pixel loss")
    loss.add_argument("--perceptual-weight", type=float, default=0.0, help="weight of the VGG19 perceptual loss")
    loss.add_argument("--ssim-weight", type=float, default=0.0, help="weight of the (1 - SSIM) loss")
    loss.add_argument("--vgg-weights", default=None, help="local VGG19 state dict for the perceptual loss")
    evaluate = parser.add_argument_group("evaluation")
    evaluate.add_argument("--dev-fraction", type=float, default=0.1,
                          help="share of each race's train images held out to choose the checkpoint")
    evaluate.add_argument("--eval-batch-size", type=int, default=32, help="images per evaluation batch")
    evaluate.add_argument("--save-samples", type=int, default=4,
                          help="images per race in the sample grids of the best checkpoint (0: none)")
    return parser


def default_out(args):
    minority = slug(args.minority) if args.minority != "none" else "balanced"
    weight = f"-w{args.weight:g}" if args.minority != "none" else ""
    return os.path.join("runs", "upscale", f"{args.arch}-x{args.scale}-{args.upsampler}-{minority}{weight}"
                        f"-seed{args.seed}")


def main(args):
    """Run the study; under torchrun every process calls this, and each returns the same table."""
    minority = parse_race(args.minority, FAIRFACE_RACES, allow_none=True)
    cli.check_weight(args.weight)
    if minority is None and args.weight != 1.0:
        raise ValueError("--weight needs --minority (a balanced run has no weight)")
    with distributed.session(cli.resolve_device(args.device)) as device:
        return run(args, minority, device)


def run(args, minority, device):
    world_size = distributed.world_size()
    if world_size > 1:  # part of the recipe: --batch-size is per process
        args.world_size = world_size
    args.out = os.path.abspath(args.out or default_out(args))
    action = distributed.run_on_main(files.prepare_out_dir, args.out, args, overwrite=args.overwrite)
    if action == "skip":
        return None
    main_process = distributed.is_main()
    engine.seed_everything(args.seed)
    root = upscaling.fairface_root(args.data)
    splits = upscaling.load_fairface_splits(root, args.dev_fraction, args.seed, skip_bad=args.skip_bad)
    sampler = datasets.MinoritySampler(splits["train"], minority, args.weight, mode=args.minority_mode,
                                       seed=args.seed, num_replicas=world_size, rank=distributed.rank(),
                                       flips=True)
    counts = sampler.realized_counts()
    if main_process:
        print(f"[data] {root}: train {len(splits['train'])} (epoch of {sampler.num_samples} draws over "
              f"{world_size} process(es)), dev {len(splits['dev'])}, val {len(splits['val'])}; minority "
              f"{minority} weight {args.weight} ({args.minority_mode})")
        for race, count in counts.items():
            print(f"  {race:<16} available {count['available']:>6}  expected draws/epoch "
                  f"{count['expected_per_epoch']:>9.1f}")
    model = upscalers.build_upscaler(args.arch, args.scale, args.upsampler, pretrained=args.pretrained,
                                     pretrained_path=args.pretrained_path).to(device)
    n_params = upscalers.count_parameters(model)
    record = files.run_record(args, study="upscale", data_root=root, device=str(device), parameters=n_params,
                              world_size=world_size,
                              split_sizes={k: len(v) for k, v in splits.items() if k != "dropped"},
                              dropped_unreadable=splits["dropped"], realized_counts=counts)
    if main_process:
        files.write_json(os.path.join(args.out, "args.json"), record)
    started = time.time()
    if args.arch != "bicubic":
        train_loader = engine.make_loader(
            upscaling.training_dataset(splits["train"], args.scale, args.hr_size, args.image_cache, args.workers),
            args.batch_size, args.workers, device, sampler=sampler)
        dev_loader = engine.make_loader(
            datasets.FairFaceSR(distributed.shard(splits["dev"]), args.scale, hr_size=args.hr_size, train=False),
            args.eval_batch_size, args.workers, device)
        loss_fn = losses.SRLoss(pixel=args.pixel_loss, perceptual_weight=args.perceptual_weight,
                                ssim_weight=args.ssim_weight, vgg_weights_path=args.vgg_weights).to(device)
        optimizer = engine.build_optimizer(model, args.lr, args.encoder_lr, args.weight_decay)
        trainer = engine.Trainer(
            model, upscaling.sr_compute_loss(loss_fn), optimizer, args.out, device=device, amp=args.amp,
            accum_steps=args.accum_steps, clip_grad=args.clip_grad, epochs=args.epochs,
            steps_per_epoch=upscaling.training_steps(len(sampler), args.batch_size, args.accum_steps),
            warmup_steps=args.warmup_steps, finetune=args.finetune, unfreeze=engine.parse_unfreeze(args.unfreeze),
            stage_prefixes=upscalers.encoder_stage_prefixes(model),
            select=upscaling.mean_psnr_selector(dev_loader, args.scale, device), log_every=args.log_every,
            run_args=record["args"])
        if action == "resume":
            trainer.resume()
        trainer.fit(train_loader)
        best = files.load_checkpoint(trainer.checkpoint_path("best.pth"))
        model.load_state_dict(best["model"])
        record.update(best_epoch=trainer.best_epoch, dev_psnr_y=trainer.best_score, history=trainer.history,
                      skipped_fp16_steps=trainer.skipped_steps, optimizer_steps=trainer.step)
        if main_process:
            print(f"[select] best epoch {trainer.best_epoch} by dev PSNR-Y {trainer.best_score:.3f} dB")
    record["train_seconds"] = time.time() - started
    if main_process:
        files.write_json(os.path.join(args.out, "args.json"), record)
    if args.save_samples and main_process:
        evaluation.save_sample_grids(
            model, datasets.FairFaceSR(splits["val"], args.scale, hr_size=args.hr_size), args.save_samples,
            args.out, device)
    run_columns = {"study": "upscale", "arch": args.arch, "scale": args.scale, "upsampler": args.upsampler,
                   "minority": minority or "none", "weight": args.weight, "minority_mode": args.minority_mode,
                   "finetune": args.finetune,
                   "recipe": files.recipe_id(args, ("arch", "scale", "upsampler", "minority", "weight",
                                                    "minority_mode", "finetune")),
                   "seed": args.seed, "code_version": record["code_version"]}
    _, table = upscaling.evaluate_to_dir(model, splits["val"], args.scale, args.hr_size, args.eval_batch_size,
                                         args.workers, device, args.out, run_columns)
    if main_process:
        print(f"[val] per race (reported split; the checkpoint was chosen on dev), results in {args.out}")
        upscaling.print_table(table)
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
