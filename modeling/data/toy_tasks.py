"""Small tasks the package generates itself, so that a model can be trained and checked with no data at all."""

import torch


def reverse_task(
    batch_size: int,
    generator: torch.Generator,
    vocab_size: int = 16,
    max_length: int = 8,
    pad_token_id: int = 0,
    eos_token_id: int = 2,
    first_symbol: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of the sequence-reversal task: sources of 3..`max_length` random symbols (ids `first_symbol` ..
    `vocab_size - 1`), right-padded; labels are the reversed source followed by </s>, -100 after it.

    Returns `input_ids`, `attention_mask` (batch, max_length) and `labels` (batch, max_length + 1).
    """
    lengths = torch.randint(3, max_length + 1, (batch_size,), generator=generator)
    input_ids = torch.full((batch_size, max_length), pad_token_id)
    labels = torch.full((batch_size, max_length + 1), -100)
    for row, length in enumerate(lengths.tolist()):
        symbols = torch.randint(first_symbol, vocab_size, (length,), generator=generator)
        input_ids[row, :length] = symbols
        labels[row, :length] = symbols.flip(0)
        labels[row, length] = eos_token_id
    return input_ids, (input_ids != pad_token_id).long(), labels


def exact_match(predictions: torch.Tensor, labels: torch.Tensor, eos_token_id: int = 2) -> float:
    """Share of rows whose prediction (without the decoder start token) reproduces the labels up to and including
    </s>, from `generate()` output and -100-padded labels."""
    matches = 0
    for prediction, target in zip(predictions[:, 1:].tolist(), labels.tolist()):
        target = [token for token in target if token != -100]
        matches += prediction[: len(target)] == target
    return matches / len(labels)


def train_on_reverse_task(
    model: torch.nn.Module,
    steps: int = 400,
    warmup: int = 40,
    learning_rate: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    on_step=None,
) -> None:
    """Trains `model` (whose vocabulary holds at least the task's 16 ids) on `reverse_task` with Adam
    (beta2 = 0.98, eps = 1e-9, as in the paper), a linear warmup and a linear decay to zero: the last steps settle
    the weights instead of jittering them. `on_step(step, loss)` is called after every step, e.g. for a progress bar.
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (steps - step) / (steps - warmup))
    )
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        input_ids, attention_mask, labels = reverse_task(batch_size, generator)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(number: int) -> str:
    """English words for 0 <= number < 1,000,000, e.g. 40021 -> "forty thousand twenty-one"."""
    if not 0 <= number < 1_000_000:
        raise ValueError(f"number_to_words covers 0 .. 999999, got {number}.")
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(number, 1000)
    return f"{number_to_words(thousands)} thousand" + (f" {number_to_words(rest)}" if rest else "")


def numbers_to_words_splits(sizes: dict[str, int], seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Disjoint splits of (digits, words) pairs, e.g. ("40021", "forty thousand twenty-one"), over 0 .. 999999:
    a translation task with a grammar to learn (teens, hyphens, "hundred", "thousand") and exact answers, that the
    package makes itself. Numbers are drawn log-uniformly so that short ones are not a rarity."""
    generator = torch.Generator().manual_seed(seed)
    wanted = sum(sizes.values())
    numbers, seen = [], set()
    while len(numbers) < wanted:
        digits = int(torch.randint(1, 7, (1,), generator=generator))
        number = int(torch.randint(0, 10**digits, (1,), generator=generator))
        if number not in seen:
            seen.add(number)
            numbers.append(number)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = [(str(n), number_to_words(n)) for n in numbers[start : start + size]]
        start += size
    return splits
