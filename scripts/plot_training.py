"""Plot a training run's loss, learning rate and BLEU against the step, from a Trainer's trainer_state.json (a run
directory or a checkpoint) or the Accelerate loop's loss_history.json.

    python scripts/plot_training.py --run RUN --output training.png
"""

import argparse

from vanilla_transformer.analysis.plotting import plot_training_curves


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory, trainer_state.json or loss_history.json")
    parser.add_argument("--output", required=True, help="the PNG to write")
    args = parser.parse_args()
    print(f"wrote {plot_training_curves(args.run, args.output)}")


if __name__ == "__main__":
    main()
