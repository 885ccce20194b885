"""
Tokenize TinyStories into memory-mapped uint16 bins that train.py reads.

    python prepare.py --variant small                    # first 50,000 / 5,000 stories from Hugging Face
    python prepare.py --variant full                     # everything (~2.1M stories, ~470M train tokens)
    python prepare.py --variant small --source sample    # the sample bundled in data_sample/, no network
    python prepare.py --variant small --tokenizer bpe4k  # a 4,096-token BPE trained on the train split

--source auto (the default) reads Hugging Face, or the bundled sample (4,709 / 1,000 stories, and
it says so) when the hub cannot be reached and nothing is cached; `hf` insists on Hugging Face;
`sample` is the bundled sample; a folder holds a train and a validation (or val) file: .txt with
stories separated by a line `<|endoftext|>`, or .jsonl / .json records with a `text` (or `story`)
field, each possibly compressed (.gz, .xz).

--tokenizer gpt2 (the default), bpe4k, bpe8k or bpe:N: a byte-level BPE of N tokens (end-of-text
included) trained on the first --tokenizer_stories train stories (tokenizer.py has the tokenizers).
Writes {data_dir}/{variant}/ for gpt2 and {data_dir}/{variant}-{tokenizer}/ otherwise: the bins
train-<sha>.bin and val-<sha>.bin (every story followed by end-of-text), the BPE's tokenizer-<sha>.json
and meta.json, which names them. Files are named after their content and never rewritten; meta.json is
replaced in one rename at the end, so the data prepared before stays usable until then (a run that
has its bins open keeps reading them). Rerunning with the same parameters does nothing; --force rebuilds.
The module is also the reader of prepared data (read_meta, load_bin, variant_dir).
"""
import argparse
import collections
import contextlib
import gzip
import hashlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from runs import atomic_write_json
from tokenizer import (EOT_TEXT, GPT2_INFO, DataError, Tokenizer, build_tokenizer, content_name, family_of,
                       file_sha256, load_tokenizer)

try:
    import fcntl  # the folder lock; Windows has none (one prepare at a time is then up to the user)
except ImportError:
    fcntl = None
try:
    import lzma  # .xz sources; some Python builds lack it (the bundled sample is gzip for that reason)
except ImportError:
    lzma = None
try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with datasets; without it there is just no progress bar
    def tqdm(**kwargs):
        return contextlib.nullcontext()

FORMAT_VERSION = 1
HF_DATASET = 'roneneldan/TinyStories'
DEFAULT_DATA_DIR = 'data/tinystories'
# split -> file stems in a local source folder (the first is also the HF split); val comes first
# because it is small, so a bad file shows up before the long train split is tokenized
SPLITS = {'val': ('validation', 'val', 'TinyStories-valid'), 'train': ('train', 'TinyStories-train')}
FORMATS = ('.txt', '.jsonl', '.json')
COMPRESSIONS = ('.gz', '.xz')
EXTENSIONS = tuple(fmt + c for fmt in FORMATS for c in ('', *COMPRESSIONS))
SAMPLE_DIR = Path(__file__).resolve().parent / 'data_sample'  # TinyStories stories bundled in the repo
SAMPLE_FILES = {'val': 'tinystories_sample_validation.txt.gz', 'train': 'tinystories_sample_train.txt.gz'}
BATCH_STORIES = 512  # ~100k tokens per batch: large writes, bounded memory, work for every thread


def encode_batch(stories, tokenizer=None):
    """Tokens of the stories, each followed by end-of-text, as one uint16 array. Runs in worker threads."""
    return (tokenizer or load_tokenizer()).encode_stories(stories)


def write_bin(stories, folder, split, num_threads, tokenizer=None, total=None, desc=''):
    """Tokenize an iterable of stories into folder/SPLIT-<sha>.bin; returns (file name, tokens, stories,
    sha256 hex). Memory stays bounded: at most 2 * num_threads batches are in flight, encoding while
    earlier ones are written."""
    sha = hashlib.sha256()
    n_tokens = n_stories = 0
    pending = collections.deque()
    tmp = temp_name(folder, f'{split}.bin')
    with open(tmp, 'wb') as f, ThreadPoolExecutor(num_threads) as pool, \
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
            pending.append((len(batch), pool.submit(encode_batch, batch, tokenizer)))
            write_done(2 * num_threads)
        write_done(0)
    return publish_file(tmp, split, sha.hexdigest()), n_tokens, n_stories, sha.hexdigest()


# -----------------------------------------------------------------------------
# sources

def find_local_files(source):
    """{'train': Path, 'val': Path} from a local source folder."""
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'not a folder' if folder.exists() else 'source folder not found'} (expected "
                        f"auto, hf, sample or a folder with train and validation .txt/.jsonl/.json files)")
    files = {}
    for split, stems in SPLITS.items():
        found = [folder / (stem + ext) for stem in stems for ext in EXTENSIONS if (folder / (stem + ext)).is_file()]
        if not found:
            raise DataError(f"{folder}: no {stems[0]} file (expected {stems[0]}.txt, {stems[0]}.jsonl or "
                            f"{stems[0]}.json, possibly .gz or .xz)")
        if len(found) > 1:
            raise DataError(f"{folder}: several {split} files ({', '.join(p.name for p in found)}); expected one")
        files[split] = found[0]
    return files


def sample_files():
    """{'train': Path, 'val': Path} of the bundled sample."""
    files = {split: SAMPLE_DIR / name for split, name in SAMPLE_FILES.items()}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{path} not found: the bundled sample is incomplete "
                            f"(git checkout {SAMPLE_DIR.name})")
    return files


DECOMPRESSION_ERRORS = (zlib.error, gzip.BadGzipFile, EOFError) + ((lzma.LZMAError,) if lzma else ())


def open_text(path, compression):
    if compression == '.xz':
        if lzma is None:
            raise DataError(f"{path}: this Python cannot read .xz files (no lzma module); decompress it or use .gz")
        return lzma.open(path, 'rt', encoding='utf-8')
    return (gzip.open if compression == '.gz' else open)(path, 'rt', encoding='utf-8')


def read_stories(path):
    """Yield the stories of a .txt / .jsonl / .json file (or .gz / .xz of one), stripped, empty ones skipped."""
    compression = path.suffix if path.suffix in COMPRESSIONS else ''
    fmt = Path(path.name[:len(path.name) - len(compression)]).suffix
    readers = {'.txt': read_txt, '.jsonl': read_jsonl, '.json': read_json}
    hint = ''
    if path.parent == SAMPLE_DIR:
        hint = f" (git checkout {SAMPLE_DIR.name} restores the bundled sample)"
    try:
        with open_text(path, compression) as f:
            for story in readers[fmt](f, path):
                if story := story.strip():
                    yield story
    except UnicodeDecodeError as e:
        what = f"damaged {compression} file or " if compression else ''
        raise DataError(f"{path}: {what}not UTF-8 text ({e.reason}); expected a UTF-8 file{hint}") from None
    except DECOMPRESSION_ERRORS as e:
        raise DataError(f"{path}: damaged {compression} file ({str(e) or type(e).__name__}){hint}") from None


def read_txt(f, path):
    lines = []
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


def read_jsonl(f, path):
    for lineno, line in enumerate(f, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno} is not JSON ({e.msg}); expected one record per line") from None
            yield story_of(record, path, f"line {lineno}")


def read_json(f, path):
    # json has no streaming parser in the stdlib: a .json file is read whole (use .txt/.jsonl for huge ones)
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


def load_hf(cache_dir, online):
    """The HF DatasetDict; when the hub is unreachable, only an existing cache is tried."""
    if not online:  # datasets would otherwise retry for minutes; must be set before it is imported
        os.environ['HF_HUB_OFFLINE'] = os.environ['HF_DATASETS_OFFLINE'] = '1'
    hint = "use --source sample (the bundled sample) or --source PATH with local train/validation files"
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
# prepared data: DATA_DIR/VARIANT[-TOKENIZER]/ holds meta.json and the files it names. Files are
# written under a temporary name, renamed to a name derived from their content (NAME-<sha>.EXT), and
# never changed after; meta.json is switched in one rename; the files it does not name are removed.

DATA_FILE_RE = re.compile(r'.+-[0-9a-f]{16}\.\w+|(train|val)\.bin|tokenizer\.json')  # content-named, or the old names
TEMP_RE = re.compile(r'.+\.tmp-.+')


def variant_dir(data_dir, variant, tokenizer='gpt2'):
    """Where a variant's bins live: DATA_DIR/small for GPT-2, DATA_DIR/small-bpe4k for a trained BPE."""
    name = family_of(tokenizer)[1]
    return Path(data_dir) / (variant if name == 'gpt2' else f'{variant}-{name}')


def rerun_hint(data_dir, variant, tokenizer='gpt2'):
    name = family_of(tokenizer)[1]
    extra = '' if name == 'gpt2' else f' --tokenizer {name}'
    extra += '' if Path(data_dir) == Path(DEFAULT_DATA_DIR) else f' --data_dir {data_dir}'
    return f"run python prepare.py --variant {variant}{extra}"


def read_meta(data_dir, variant, tokenizer='gpt2'):
    """The meta.json of variant_dir(data_dir, variant, tokenizer) as a dict (tokens, stories, file, sha256
    per split, vocab_size, eot_token, tokenizer_info: the dict for tokenizer.load_tokenizer...)."""
    name = family_of(tokenizer)[1]
    path = variant_dir(data_dir, variant, name) / 'meta.json'
    hint = rerun_hint(data_dir, variant, name)
    if not path.is_file():
        raise DataError(f"{path} not found: {hint}")
    try:
        meta = json.loads(path.read_text(encoding='utf-8'))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable ({e}): {hint} --force") from None
    if not (isinstance(meta, dict) and meta.get('format_version') == FORMAT_VERSION
            and {'train', 'val', 'dtype'} <= meta.keys()):
        raise DataError(f"{path}: expected a meta.json of format_version {FORMAT_VERSION} with train, val and dtype: "
                        f"{hint} --force")
    if meta.get('tokenizer', 'gpt2') != name:
        raise DataError(f"{path}: holds {meta.get('tokenizer')} tokens, expected {name}: {hint} --force")
    if name == 'gpt2' and 'tokenizer_info' not in meta:  # prepared before tokenizers were recorded
        meta['tokenizer_info'] = dict(GPT2_INFO)
    for split in SPLITS:
        file = meta[split].setdefault('file', f'{split}.bin')  # named after their content since 2026-12
        if Path(file).name != file:
            raise DataError(f"{path}: {split} file {file!r} must be a file name inside the folder: {hint} --force")
    return meta


def load_bin(data_dir, variant, split, verify=True, tokenizer='gpt2'):
    """The tokens of split ('train' or 'val') as a read-only uint16 memmap, checked against meta.json."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'val'")
    meta = read_meta(data_dir, variant, tokenizer)
    path = variant_dir(data_dir, variant, tokenizer) / meta[split]['file']
    hint = rerun_hint(data_dir, variant, tokenizer)
    try:
        f = open(path, 'rb')  # held open: a rebuild that removes the file after this cannot pull it away
    except FileNotFoundError:
        raise DataError(f"{path} not found: {hint}") from None
    with f:
        expected = meta[split]['tokens'] * np.dtype(meta['dtype']).itemsize
        size = os.fstat(f.fileno()).st_size
        if size != expected:
            raise DataError(f"{path}: {size} bytes, meta.json expects {expected}: {hint} --force")
        if verify and file_sha256(f) != meta[split]['sha256']:
            raise DataError(f"{path}: sha256 differs from meta.json (damaged file): {hint} --force")
        return np.memmap(f, dtype=meta['dtype'], mode='r')


def temp_name(folder, name):
    return Path(folder) / f'{name}.tmp-{socket.gethostname()}-{os.getpid()}'


def publish_file(tmp, split, sha):
    """fsync the finished temporary file tmp and rename it to SPLIT-<sha>.bin; returns that name."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    path = tmp.with_name(content_name(split, '.bin', sha))
    if path.is_file() and file_sha256(path) == sha:  # already there (a rebuild of the same data): untouched
        tmp.unlink()
    else:
        os.replace(tmp, path)
    return path.name


@contextlib.contextmanager
def folder_lock(folder):
    """Hold the data folder while its files are written: one prepare at a time (an exclusive lock on
    folder/.prepare.lock, which the kernel drops when the process ends, however it ends). Before and
    after, the files the current meta.json does not name are removed: temporary files of a killed
    prepare, the bins it replaced, those of a build that failed. A folder this call created and
    left without data is removed."""
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / '.prepare.lock', 'a') as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataError(f"{folder}: another prepare.py is writing this folder; wait for it to finish") from None
        remove_unnamed_files(folder)
        try:
            yield
        finally:
            remove_unnamed_files(folder)
            if created and not (folder / 'meta.json').exists():
                (folder / '.prepare.lock').unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()


def remove_unnamed_files(folder):
    """Remove temporary files and the data files that folder/meta.json does not name (a run reading
    one keeps its open copy on POSIX)."""
    keep = set()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        meta = json.loads((folder / 'meta.json').read_text(encoding='utf-8'))
        keep = {meta[split].get('file', f'{split}.bin') for split in SPLITS}
        keep.add((meta.get('tokenizer_info') or {}).get('file'))
    for path in folder.iterdir():
        if TEMP_RE.fullmatch(path.name) or (DATA_FILE_RE.fullmatch(path.name) and path.name not in keep):
            path.unlink(missing_ok=True)


def tokenizer_meta(tok):
    """meta.json's description of the tokenizer; tokenizer_info is what load_tokenizer takes."""
    return dict(tokenizer=tok.name, vocab_size=tok.vocab_size, eot_token=tok.eot_token,
                tokenizer_file=tok.file, tokenizer_sha256=tok.sha256, tokenizer_info=tok.info())


def up_to_date(data_dir, variant, tokenizer, params):
    """The meta dict when the prepared folder matches params and its bins (and tokenizer) check out."""
    try:
        meta = read_meta(data_dir, variant, tokenizer)
        if all(meta.get(k) == v for k, v in params.items()):
            for split in SPLITS:
                load_bin(data_dir, variant, split, tokenizer=tokenizer)  # raises if missing or damaged
            load_tokenizer(meta['tokenizer_info'], variant_dir(data_dir, variant, tokenizer))
            return meta
    except (DataError, KeyError):
        pass  # missing, damaged or different: rebuild
    return None


def source_params(source, files):
    """What identifies a source in meta.json; a local file that changed (size or mtime) is rebuilt."""
    if files is None:
        return dict(source=f'hf:{HF_DATASET}', source_files=None)
    return dict(source='sample' if source == 'sample' else str(Path(source).resolve()), source_files={
        split: dict(path=str(p.resolve()), bytes=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns)
        for split, p in files.items()})


def prepare(variant='small', source='auto', data_dir=DEFAULT_DATA_DIR, cache_dir='data/cache',
            small_train_samples=50_000, small_val_samples=5_000, num_threads=None, force=False, tokenizer='gpt2',
            tokenizer_stories=200_000):
    """Build (or find up to date) variant_dir(data_dir, variant, tokenizer); returns its meta dict."""
    if variant not in ('small', 'full'):
        raise DataError(f"unknown variant {variant!r}: expected 'small' or 'full'")
    if min(small_train_samples, small_val_samples, tokenizer_stories) < 1:
        raise DataError(f"--small_train_samples, --small_val_samples and --tokenizer_stories must be >= 1, "
                        f"got {small_train_samples}, {small_val_samples} and {tokenizer_stories}")
    if num_threads is not None and num_threads < 0:
        raise DataError(f"--num_threads={num_threads}: expected a positive number (or 0: all CPUs)")
    family, tok_name, vocab_size = family_of(tokenizer)
    limits = dict(train=None, val=None)  # full: every story
    if variant == 'small':
        limits = dict(train=small_train_samples, val=small_val_samples)
    num_threads = num_threads or os.cpu_count() or 1
    files = None  # Hugging Face
    if source == 'sample':
        files = sample_files()
    elif source not in ('auto', 'hf'):
        files = find_local_files(source)  # before anything is touched
    common = dict(format_version=FORMAT_VERSION, variant=variant, tokenizer=tok_name,
                  small_train_samples=limits['train'], small_val_samples=limits['val'],
                  tokenizer_stories=tokenizer_stories if family.trained else None)
    out_dir = variant_dir(data_dir, variant, tok_name)
    params = dict(common, **source_params(source, files))
    meta = None if force else up_to_date(data_dir, variant, tok_name, params)
    dataset = None
    if meta is None and files is None:
        online = hub_reachable()
        offline_default = not online and source == 'auto' and all(
            (SAMPLE_DIR / name).is_file() for name in SAMPLE_FILES.values())
        if offline_default:
            files = sample_files()
            params = dict(common, **source_params('sample', files))
            if not force:  # prepared from the sample offline before
                meta = up_to_date(data_dir, variant, tok_name, params)
        if meta is None:
            try:
                dataset = load_hf(cache_dir, online)
                files, params = None, dict(common, **source_params('hf', None))
                if not online:
                    print(f"the Hugging Face hub cannot be reached: {HF_DATASET} from the cache {cache_dir}")
            except DataError:
                if not offline_default:
                    raise
                print(f"the Hugging Face hub cannot be reached and {HF_DATASET} is not cached in "
                      f"{cache_dir}: using the sample bundled in {SAMPLE_DIR.name}/ "
                      f"(4,709 train / 1,000 validation stories)")
    if meta is not None:
        print(f"{out_dir} is up to date ({meta['train']['tokens']:,} train / {meta['val']['tokens']:,} val "
              f"tokens, source {meta['source']}); --force rebuilds")
        return meta

    def split_inputs(split):  # (name, a fresh iterator over the split's stories, its size if known)
        if dataset is not None:
            hf_split = SPLITS[split][0]
            return f"{HF_DATASET}[{hf_split}]", hf_stories(dataset[hf_split]), len(dataset[hf_split])
        return str(files[split]), read_stories(files[split]), None
    with folder_lock(out_dir):
        meta = dict(params, dtype='uint16', checksum='sha256')
        train_name, train_stories, _ = split_inputs('train')
        n_train = min(tokenizer_stories, limits['train'] or tokenizer_stories) if family.trained else 0
        tok, n_seen = make_tokenizer(tok_name, vocab_size, train_name, islice(train_stories, n_train), out_dir)
        if family.trained:
            meta['tokenizer_train_stories'] = n_seen
        meta.update(tokenizer_meta(tok))
        for split in SPLITS:
            name, stories, size = split_inputs(split)
            t0 = time.perf_counter()
            file, n_tokens, n_stories, sha = write_bin(islice(stories, limits[split]), out_dir, split, num_threads,
                                                       tok, total=limits[split] or size, desc=split)
            if n_stories == 0:
                raise DataError(f"{name}: no stories found (expected stories separated by lines '{EOT_TEXT}', "
                                f"or records with 'text')")
            dt = time.perf_counter() - t0
            print(f"{split}: {n_stories:,} stories, {n_tokens:,} {tok.name} tokens from {name} "
                  f"({dt:.1f} s, {n_tokens / dt / 1e6:.2f}M tokens/s)")
            if limits[split] and n_stories < limits[split]:
                print(f"{split}: the source has only {n_stories:,} stories, fewer than the {limits[split]:,} "
                      f"asked for: kept them all")
            meta[split] = dict(file=file, tokens=n_tokens, stories=n_stories, sha256=sha)
        atomic_write_json(out_dir / 'meta.json', meta)  # last: until this rename, readers see the data before
    print(f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir() if p.name[0] != '.'))})")
    return meta


def make_tokenizer(name, vocab_size, source_name, stories, folder):
    """The tokenizer `name`, trained on `stories` if its family learns (its file written into folder);
    returns (it, loaded as every script loads it, the number of stories it saw)."""
    n_stories = 0

    def counted():
        nonlocal n_stories
        for story in stories:
            n_stories += 1
            yield story
    t0 = time.perf_counter()
    tok = build_tokenizer(name, counted(), folder)
    if not tok.trained:
        return tok, 0
    if n_stories == 0:
        raise DataError(f"{source_name}: no text to train the {name} tokenizer on (expected stories "
                        f"separated by lines '{EOT_TEXT}', or records with 'text')")
    print(f"tokenizer: {name} trained on {n_stories:,} stories of {source_name} in {time.perf_counter() - t0:.1f} s")
    if tok.vocab_size < vocab_size:
        print(f"tokenizer: the text allows only {tok.vocab_size:,} tokens, fewer than the {vocab_size:,} "
              f"asked for")
    return tok, n_stories


def write_token_bins(out_dir, tokens, **info):
    """Already tokenized splits ({'train': ids, 'val': ids}, GPT-2 ids) as a prepared variant folder,
    e.g. synthetic data for benchmarks on machines without the tokenizer files."""
    out_dir = Path(out_dir)
    meta = dict(format_version=FORMAT_VERSION, dtype='uint16', checksum='sha256', **info)
    meta.update(tokenizer_meta(Tokenizer(**GPT2_INFO)))
    with folder_lock(out_dir):
        for split in SPLITS:
            ids = np.asarray(tokens[split], dtype=np.uint16)
            tmp = temp_name(out_dir, f'{split}.bin')
            ids.tofile(tmp)
            sha = file_sha256(tmp)
            meta[split] = dict(file=publish_file(tmp, split, sha), tokens=len(ids), stories=None, sha256=sha)
        atomic_write_json(out_dir / 'meta.json', meta)
    return meta

def main(argv=None):
    parser = argparse.ArgumentParser(description="Tokenize TinyStories into uint16 train.bin / val.bin.")
    parser.add_argument('--variant', required=True, choices=['small', 'full'], help="small: the first N stories; full: all")
    parser.add_argument('--source', default='auto', metavar='auto|hf|sample|PATH',
                        help=f"auto (default): {HF_DATASET} from Hugging Face, or the bundled sample when the hub "
                             f"cannot be reached and nothing is cached; hf: Hugging Face only; sample: the "
                             f"bundled sample ({SAMPLE_DIR.name}/); or a folder with train and validation "
                             f".txt/.jsonl/.json files")
    parser.add_argument('--tokenizer', default='gpt2', metavar='gpt2|bpe4k|bpe8k|bpe:N',
                        help="gpt2 (default), bpe4k, bpe8k or bpe:N (a byte-level BPE of N tokens trained on the train split; "
                             "its bins go to DATA_DIR/VARIANT-bpe4k/)")
    parser.add_argument('--tokenizer_stories', type=int, default=200_000,
                        help="a BPE is trained on the first N stories of the train split (default 200,000)")
    parser.add_argument('--data_dir', default=DEFAULT_DATA_DIR, help="bins go to DATA_DIR/VARIANT/")
    parser.add_argument('--cache_dir', default='data/cache', help="Hugging Face datasets download cache")
    parser.add_argument('--small_train_samples', type=int, default=50_000)
    parser.add_argument('--small_val_samples', type=int, default=5_000)
    parser.add_argument('--num_threads', type=int, default=None, help="tokenizer threads (default: all CPUs)")
    parser.add_argument('--force', action='store_true', help="rebuild even if the data is up to date")

    def fail(message):  # one line, no usage dump, no traceback, exit code 1
        sys.exit(f"prepare.py: error: {message}")
    parser.error = fail
    args = parser.parse_args(argv)
    try:
        prepare(**vars(args))
    except DataError as e:
        fail(e)
    except OSError as e:  # disk full, permissions...
        fail(f"{e.filename}: {e.strerror}" if e.filename else e)
    except KeyboardInterrupt:
        fail("interrupted: the data prepared before is untouched; rerun to finish")


if __name__ == '__main__':
    main()
