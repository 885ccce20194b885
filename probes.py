"""
Probes: evals that tell architectures apart where one loss number does not (issue 21). Position
encodings show in how loss behaves past the training context, attention changes in in-context
copying, everything in what a model writes.

A probe is one function probe_x(model, tok, data, settings) -> (numbers, detail): `numbers` are the
run's named results ({name: float}, nan where it has none), to which eval_harness.py applies the
seed-group statistics of compare.py (stats.py); `detail` is what the report shows beside them
(curves, stories, a status line). Adding a probe is one function and one entry in PROBES.

    length      val loss and bits per byte by position, at 1x, 2x and 4x the training context, on
                whole validation stories concatenated to length
    copy        in-context copying (induction): random tokens repeated, and random tokens inserted
                into a story and repeated later; accuracy and loss on the first vs the second copy
    generation  fixed story openings continued greedily and sampled at a fixed seed: length, share
                ending with end-of-text, repeated 4-grams, distinct-1/2, the run's own loss on its text

`data` holds `stories` (validation stories, text) and anything else a probe needs; `settings` is
DEFAULT_SETTINGS with the command line's changes. Every probe is deterministic given its settings.
"""
import dataclasses
import math
import re

import numpy as np
import torch

DEFAULT_SETTINGS = dict(
    seed=1337,                 # random tokens, stories and sampling
    length_multiples=(1, 2, 4),  # evaluation lengths, in training contexts (block_size)
    length_sequences=16,       # sequences of concatenated stories per run
    length_buckets=8,          # position buckets per training context (the plot's resolution)
    copy_tokens=32,            # random tokens per copy (at most what fits the context twice)
    copy_sequences=16,         # sequences per copy task
    generation_tokens=120,     # new tokens per story opening
    temperature=0.8, top_k=200,  # the sampled stories (as compare.py's report)
)
# fixed story openings for the generation probe (TinyStories style)
OPENINGS = ['Once upon a time', 'One day, a little girl named Lily', 'Tom and his dog went to the park',
            'Once upon a time, there was a big', 'Sara had a red ball. She', 'The sun was shining and',
            'Ben wanted to help his mom', 'In a small house lived a cat named']
MAX_LOGITS = 2 ** 25  # logits per forward pass (128 MiB of float32): rows are batched to stay under it

# -----------------------------------------------------------------------------
# shared pieces: losses per token, a model at a longer context, story sequences


def model_device(model):
    return next(model.parameters(), torch.empty(0)).device


@torch.no_grad()
def token_losses(model, seqs):
    """Loss (nats) and greedy hit (argmax == target) of every predicted token of each sequence (lists of
    token ids, all of one length L + 1): two arrays (N, L). The model is called as in training,
    model(x, y, reduction='none') -> (logits, loss per token)."""
    was_training = model.training
    model.eval()
    seqs = torch.tensor(np.asarray(seqs, dtype=np.int64))
    n, length = seqs.shape[0], seqs.shape[1] - 1
    rows = max(1, MAX_LOGITS // (length * model.config.vocab_size))
    device = model_device(model)
    losses, hits = [], []
    for i in range(0, n, rows):
        batch = seqs[i:i + rows].to(device)
        logits, loss = model(batch[:, :-1], batch[:, 1:], reduction='none')
        losses.append(loss.float().cpu())
        hits.append((logits[..., :model.config.vocab_size].argmax(-1) == batch[:, 1:]).cpu())
    model.train(was_training)
    return torch.cat(losses).numpy().astype(np.float64), torch.cat(hits).numpy()


def at_length(model, length):
    """(a model that runs sequences of `length` tokens, None), or (None, why it cannot). Up to block_size
    that is the model itself; past it, the same weights in a model of the same class built for the
    longer context. A parameter whose shape depends on block_size (a learned position table) means
    the variant has nothing to say about positions it was never given."""
    config = model.config
    if length <= config.block_size:
        return model, None
    longer = type(model)(dataclasses.replace(config, block_size=length))
    ours, theirs = dict(longer.named_parameters()), dict(model.named_parameters())
    sized = [k for k, p in theirs.items() if k in ours and ours[k].shape != p.shape]
    if sized:
        return None, (f"cannot run past its training context of {config.block_size} tokens: "
                      f"{', '.join(sized)} {'has' if len(sized) == 1 else 'have'} one entry per position "
                      f"(learned positions)")
    state = longer.state_dict()
    # buffers built for the length (position tables, masks) stay the longer model's own
    longer.load_state_dict({k: v for k, v in model.state_dict().items() if state[k].shape == v.shape},
                           strict=False)
    return longer.to(model_device(model)).eval(), None


def story_sequences(tok, stories, length, n):
    """n sequences of length + 1 tokens, each <|endoftext|> then whole validation stories, each followed
    by <|endoftext|>, the last one cut at the length; the next sequence starts at the next story."""
    seqs, seq = [], [tok.eot_token]
    for story in stories:
        seq += tok.encode(story) + [tok.eot_token]
        if len(seq) >= length + 1:
            seqs.append(seq[:length + 1])
            seq = [tok.eot_token]
            if len(seqs) == n:
                return seqs
    raise ValueError(f"the validation stories hold {len(seqs)} sequences of {length + 1} tokens, "
                     f"{n} are needed: use fewer --length_sequences or more stories")

# -----------------------------------------------------------------------------
# length: loss by position at 1x, 2x, 4x the training context


def band_name(lo, hi):
    return f"{lo:g}-{hi:g}x" if lo else f"0-{hi:g}x"


def probe_length(model, tok, data, settings):
    """Loss (nats per token) and bits per byte in each length band (0-1x, 1x-2x, 2x-4x of block_size)
    and in position buckets. The stories are scored once at the longest length the variant can run:
    a causal model's loss at a position depends only on what came before, so the first block_size
    positions of a 4x sequence are the 1x evaluation."""
    context = model.config.block_size
    multiples = sorted(settings['length_multiples'])
    runner, status, reach = None, None, 0
    for m in reversed(multiples):  # the longest length it can run
        runner, why = at_length(model, m * context)
        status = status or why
        if runner is not None:
            reach = m
            break
    if runner is None:
        raise ValueError(status)
    seqs = story_sequences(tok, data['stories'], reach * context, settings['length_sequences'])
    loss, _ = token_losses(runner, seqs)
    nbytes = token_bytes(tok)[np.asarray(seqs)[:, 1:]]
    width = max(1, context // settings['length_buckets'])
    positions = []
    for start in range(0, reach * context, width):
        end = min(start + width, reach * context)
        positions.append(dict(start=start, end=end, **_loss_and_bpb(loss[:, start:end], nbytes[:, start:end])))
    numbers = {}
    for lo, hi in zip([0] + multiples[:-1], multiples):
        band = band_name(lo, hi)
        if hi <= reach:
            both = _loss_and_bpb(loss[:, lo * context:hi * context], nbytes[:, lo * context:hi * context])
        else:
            both = dict(loss=math.nan, bpb=math.nan)
        numbers[f'loss_{band}'], numbers[f'bpb_{band}'] = both['loss'], both['bpb']
    detail = dict(context=context, reach=reach, positions=positions, sequences=len(seqs),
                  status=status or f'ran to {reach}x ({reach * context} tokens)')
    return numbers, detail


def _loss_and_bpb(loss, nbytes):
    """Mean loss per token; bits per byte over the text tokens (end-of-text has no bytes), as train.py."""
    text = nbytes > 0
    bpb = loss[text].sum() / math.log(2) / nbytes.sum() if nbytes.sum() else math.nan
    return dict(loss=float(loss.mean()), bpb=float(bpb))


_TOKEN_BYTES = {}


def token_bytes(tok):
    """tok.token_byte_lengths(), computed once per tokenizer (GPT-2's takes a second)."""
    key = (tok.name, tok.sha256)
    if key not in _TOKEN_BYTES:
        _TOKEN_BYTES[key] = np.asarray(tok.token_byte_lengths())
    return _TOKEN_BYTES[key]

# -----------------------------------------------------------------------------
# copy: induction on random tokens, alone and inside a story


def copy_tasks(tok, stories, context, settings):
    """{'random': (sequences, first copy targets, second copy targets), 'story': ...}. A sequence is
    <|endoftext|> + R + R (random), or <|endoftext|> + story part + R + story part + R (story), R being
    distinct random tokens that do not occur elsewhere in the sequence, so that the second copy is
    predictable only by copying. Targets are the loss columns that predict R[1:] (R[0] follows
    unrelated text both times)."""
    rng = np.random.default_rng(settings['seed'])
    text_ids = np.flatnonzero(token_bytes(tok)[:tok.vocab_size] > 0)
    n_random = min(settings['copy_tokens'], (context - 1) // 2)
    n_story = min(settings['copy_tokens'], (context - 1) // 4)
    gap = (context - 1 - 2 * n_story) // 2  # story tokens before each copy
    random_seqs, story_seqs = [], []
    for _ in range(settings['copy_sequences']):
        r = rng.choice(text_ids, n_random, replace=False).tolist()
        random_seqs.append([tok.eot_token] + r + r)
    start = int(rng.integers(len(stories)))  # stories long enough for both gaps, from a seeded start
    for story in stories[start:] + stories[:start]:
        if len(story_seqs) == settings['copy_sequences']:
            break
        ids = tok.encode(story)
        if len(ids) < 2 * gap:
            continue
        r = rng.choice(np.setdiff1d(text_ids, ids[:2 * gap]), n_story, replace=False).tolist()
        story_seqs.append([tok.eot_token] + ids[:gap] + r + ids[gap:2 * gap] + r)
    if len(story_seqs) < settings['copy_sequences']:
        raise ValueError(f"only {len(story_seqs)} validation stories have {2 * gap} tokens for the story copy "
                         f"task; {settings['copy_sequences']} needed")
    # loss column i predicts token i + 1
    first, first_in_story = np.arange(1, n_random), np.arange(1 + gap, gap + n_story)
    return dict(random=(random_seqs, first, first + n_random),
                story=(story_seqs, first_in_story, first_in_story + n_story + gap))


def probe_copy(model, tok, data, settings):
    """Accuracy (greedy next token) and loss on the first and the second copy of random tokens: a model
    that copies in context predicts the second copy (induction heads); the first is a guess."""
    numbers, detail = {}, {}
    for task, (seqs, first, second) in copy_tasks(tok, data['stories'], model.config.block_size, settings).items():
        loss, hit = token_losses(model, seqs)
        for copy, cols in (('first', first), ('second', second)):
            numbers[f'{task}_acc_{copy}'] = float(hit[:, cols].mean())
            numbers[f'{task}_loss_{copy}'] = float(loss[:, cols].mean())
        detail[task] = dict(sequences=len(seqs), copy_tokens=len(first) + 1, length=len(seqs[0]))
    return numbers, detail

# -----------------------------------------------------------------------------
# generation: what the model writes from fixed openings

WORD = re.compile(r"\w+(?:'\w+)*")


def words(text):
    return WORD.findall(text.lower())


def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def text_statistics(texts):
    """mean_words (per text), rep4 (share of each text's word 4-grams that repeat one earlier in the same
    text, pooled over texts), distinct1/distinct2 (distinct word uni/bigrams over all of them / all of
    them, Li et al. 2016). Words are lowercase, punctuation dropped: the same for every tokenizer."""
    split = [words(t) for t in texts]
    grams4 = [ngrams(w, 4) for w in split]
    n4 = sum(len(g) for g in grams4)
    repeated = sum(len(g) - len(set(g)) for g in grams4)
    out = dict(mean_words=float(np.mean([len(w) for w in split])) if texts else math.nan,
               rep4=repeated / n4 if n4 else math.nan)
    for n in (1, 2):
        grams = [g for w in split for g in ngrams(w, n)]
        out[f'distinct{n}'] = len(set(grams)) / len(grams) if grams else math.nan
    return out


@torch.no_grad()
def probe_generation(model, tok, data, settings):
    """Each opening continued greedily and sampled (temperature, top_k, seed fixed): text statistics,
    the share that ended with end-of-text, and the run's own loss on what it wrote (nats per token)."""
    openings = data.get('openings', OPENINGS)
    prompts = [tok.encode(p) for p in openings]
    max_new = settings['generation_tokens']  # past block_size model.generate crops the context, as nanoGPT
    numbers, stories = {}, []
    threads = torch.get_num_threads()
    if model_device(model).type == 'cpu':  # a few rows, one token at a time: threads spin (10x slower on a busy CPU)
        torch.set_num_threads(1)
    try:
        for decoding, temperature in (('greedy', 0.0), ('sampled', settings['temperature'])):
            generator = torch.Generator(device=model_device(model)).manual_seed(settings['seed'])
            new = model.generate(prompts, max_new, temperature=temperature, top_k=settings['top_k'],
                                 eot_token=tok.eot_token, generator=generator)
            stats = generation_statistics(model, tok, prompts, new, max_new)
            numbers.update({f'{decoding}_{k}': v for k, v in stats.items()})
            stories += [dict(decoding=decoding, opening=o, text=tok.decode(ids), tokens=len(ids),
                             ended=len(ids) < max_new) for o, ids in zip(openings, new)]
    finally:
        torch.set_num_threads(threads)
    return numbers, dict(max_new_tokens=max_new, stories=stories)


def generation_statistics(model, tok, prompts, new, max_new):
    """text_statistics of the decoded continuations `new` (lists of ids), eot_share (generate stops at
    end-of-text and drops it: a row shorter than max_new ended there) and self_loss: the model's own
    loss on what it wrote after each prompt, nats per token over all of them. A continuation is scored
    in pieces of block_size // 2 tokens, each after all that came before it (model.score keeps the last
    block_size + 1 tokens), so every token is scored with at least half a context before it."""
    stats = text_statistics([tok.decode(ids) for ids in new])
    step = max(1, model.config.block_size // 2)
    contexts, pieces = [], []
    for p, ids in zip(prompts, new):
        for i in range(0, len(ids), step):
            contexts.append(list(p) + list(ids[:i]))
            pieces.append(list(ids[i:i + step]))
    logprobs = model.score(contexts, pieces)[0] if pieces else []
    n_tokens = sum(map(len, pieces))
    stats['eot_share'] = sum(len(ids) < max_new for ids in new) / len(new)
    stats['self_loss'] = -sum(logprobs) / n_tokens if n_tokens else math.nan
    return {k: float(v) for k, v in stats.items()}



# name -> probe; eval_harness.py adds 'prompts' (the prompt file) to these
PROBES = {'length': probe_length, 'copy': probe_copy, 'generation': probe_generation}
