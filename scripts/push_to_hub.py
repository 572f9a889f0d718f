"""Push a saved model directory (model, tokenizer, model card) to the Hugging Face Hub as one commit. The token
comes from HF_TOKEN or `hf auth login`. Nothing is uploaded unless the directory loads as a model.

    python scripts/push_to_hub.py --model_dir RUN --repo_id USER/NAME [--private] [--revision BRANCH]
"""

import argparse

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.training.hub import push_model_directory


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="a directory written by save_pretrained, with the tokenizer")
    parser.add_argument("--repo_id", required=True, help="USER/NAME or ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", help="branch to push to (created from main if missing); default main")
    parser.add_argument("--commit_message", help="default: 'Upload <dir> with vanilla-transformer'")
    parser.add_argument("--language", nargs="*", help="languages for the card's metadata, e.g. de en")
    parser.add_argument("--dataset", nargs="*", help="training datasets for the card's metadata")
    parser.add_argument("--example", default="Ein Mann fährt Fahrrad.", help="source sentence of the card's snippet")
    args = parser.parse_args()
    commit = push_model_directory(
        args.model_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        languages=args.language,
        datasets=args.dataset,
        example=args.example,
    )
    print(f"pushed {args.model_dir} to {args.repo_id} at commit {commit.oid}: {commit.commit_url}")


if __name__ == "__main__":
    main()
