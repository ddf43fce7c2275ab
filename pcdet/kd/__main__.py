"""Command line of the KD package: ``python -m pcdet.kd list`` prints the registered methods."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pcdet.kd", description="knowledge-distillation methods")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered KD methods, one per line: NAME  summary")
    args = parser.parse_args(argv)
    if args.command == "list":
        from pcdet.kd.methods import KD_METHODS, summary

        width = max(len(n) for n in KD_METHODS)
        for name in KD_METHODS:
            print(f"{name:<{width}}  {summary(KD_METHODS.get(name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
