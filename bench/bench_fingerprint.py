"""Cost of a run's data fingerprint (racecomp.datasets.fingerprint) on a FairFace-size folder.

    python -m bench.bench_fingerprint --make /tmp/fp_tree --files 97698 --file-bytes 11000

With --make, first writes a FairFace-layout tree there (the two label CSVs, train/ and val/ with --files
files of --file-bytes random bytes each: the fingerprint reads names and sizes, the label files and SAMPLED
images, never decodes, so the bytes need not be JPEGs); without it, --data names an existing folder. Prints
the seconds of --repeats fingerprints (the first one after --make finds the files in the page cache: a cold
first read on a network file system is slower).
"""
import argparse
import os
import time

from racecomp.datasets import fingerprint

FAIRFACE_VAL_SHARE = 10_954 / 97_698


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None, help="existing data folder to fingerprint")
    parser.add_argument("--make", default=None, help="write a synthetic FairFace-size tree here first")
    parser.add_argument("--files", type=int, default=97_698, help="image files of the synthetic tree")
    parser.add_argument("--file-bytes", type=int, default=11_000, help="bytes of each (FairFace: ~11 KB)")
    parser.add_argument("--repeats", type=int, default=3, help="fingerprints timed")
    return parser


def make_tree(root, n_files, file_bytes):
    n_val = round(n_files * FAIRFACE_VAL_SHARE)
    for split, count in (("train", n_files - n_val), ("val", n_val)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        with open(os.path.join(root, f"fairface_label_{split}.csv"), "w", encoding="utf-8") as labels:
            labels.write("file,age,gender,race,service_test\n")
            for index in range(1, count + 1):
                with open(os.path.join(root, split, f"{index}.jpg"), "wb") as handle:
                    handle.write(os.urandom(file_bytes))
                labels.write(f"{split}/{index}.jpg,20-29,Female,White,True\n")


def main(args):
    root = args.data
    if args.make:
        started = time.perf_counter()
        make_tree(args.make, args.files, args.file_bytes)
        print(f"wrote {args.files:,} files of {args.file_bytes:,} bytes in {time.perf_counter() - started:.1f} s")
        root = args.make
    for _ in range(args.repeats):
        started = time.perf_counter()
        found = fingerprint.fingerprint(root)
        print(f"fingerprint of {found['files']:,} files ({found['bytes'] / 1e9:.2f} GB): "
              f"{time.perf_counter() - started:.2f} s  id {found['id']}", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
