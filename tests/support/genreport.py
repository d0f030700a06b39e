"""ISC's genreport (the EDNS compliance battery behind DNS flag day) as plain dig queries, and
its verdicts read back from dig's output.

genreport itself is not packaged for Debian; its probes are plain dig queries, so the tests run
them against a server and judge each reply as genreport's ``process()`` does (``ok`` or the
names of what was wrong), and write the report line as its ``printandfree()`` does. The judge
wants NSID back on the probes that ask for it, named ``NSID``: servers judged here set
``dns.nsid`` to it."""

from __future__ import annotations

import re
import subprocess

from tests.support.helpers import DnsdiscProcess, require_tool

ZONE = "svc.internal"
NSID = "genreport"
# name -> dig arguments (genreport's table, EDNS and FULL groups, <zone> filled in), in its
# order: the report line lists them so.
PROBES = {
    "dns": "+noedns +noad +norec SOA <zone>",
    "aa": "+noedns +noad +norec +aaflag SOA <zone>",
    "ad": "+noedns +ad +norec SOA <zone>",
    "cd": "+noedns +noad +norec +cd SOA <zone>",
    "ra": "+noedns +noad +norec +raflag SOA <zone>",
    "rd": "+noedns +noad +rec SOA <zone>",
    "tc": "+noedns +noad +norec +tcflag SOA <zone>",
    "zflag": "+noedns +noad +norec +zflag SOA <zone>",
    "opcode": "+noedns +noad +norec +header-only +opcode=15",
    "opcodeflg": "+noedns +header-only +opcode=15 +tcflag +rec +raflag +cd +ad +aaflag +zflag",
    "type666": "+noedns +noad +norec TYPE666 <zone>",
    "tcp": "+noedns +noad +norec +tcp SOA <zone>",
    "edns": "+edns=0 +nocookie +noad +norec SOA <zone>",
    "edns1": "+edns=1 +noednsneg +nocookie +noad +norec SOA <zone>",
    "edns@512": "+edns=0 +nocookie +noad +norec +dnssec +ignore +bufsize=512 DNSKEY <zone>",
    "ednsopt": "+edns=0 +nocookie +noad +norec +ednsopt=100 SOA <zone>",
    "edns1opt": "+edns=1 +noednsneg +nocookie +noad +norec +ednsopt=100 SOA <zone>",
    "do": "+edns=0 +nocookie +noad +norec +dnssec SOA <zone>",
    # genreport's table sets CD in this query, though its dig line leaves +cd out.
    "docd": "+edns=0 +nocookie +noad +norec +dnssec +cd SOA <zone>",
    "edns1do": "+edns=1 +noednsneg +nocookie +noad +norec +dnssec SOA <zone>",
    "ednsflags": "+edns=0 +nocookie +noad +norec +ednsflags=0x0080 SOA <zone>",
    "optlist": "+edns=0 +noad +norec +nsid +subnet=0.0.0.0/0 +expire "
    "+cookie=0102030405060708 SOA <zone>",
    "ednsnsid": "+edns=0 +nocookie +noad +norec +nsid SOA <zone>",
    "ednscookie": "+edns=0 +noad +norec +cookie=0102030405060708 SOA <zone>",
    "ednsexpire": "+edns=0 +nocookie +noad +norec +expire SOA <zone>",
    "ednssubnet": "+edns=0 +nocookie +noad +norec +subnet=0.0.0.0/0 SOA <zone>",
    "edns1nsid": "+edns=1 +noednsneg +nocookie +noad +norec +nsid SOA <zone>",
    "edns1cookie": "+edns=1 +noednsneg +noad +norec +cookie=0102030405060708 SOA <zone>",
    "edns1expire": "+edns=1 +noednsneg +nocookie +noad +norec +expire SOA <zone>",
    "edns1subnet": "+edns=1 +noednsneg +nocookie +noad +norec +subnet=0.0.0.0/0 SOA <zone>",
    "ednstcp": "+edns=0 +nocookie +noad +norec +dnssec +bufsize=512 +tcp DNSKEY <zone>",
}
# genreport's default mode (its EDNS group); full mode (-f) adds every other probe above.
DEFAULT = ("dns", "edns", "edns1", "edns@512", "ednsopt", "edns1opt", "do", "ednsflags",
           "optlist", "ednstcp")  # fmt: skip
FULL = tuple(PROBES)


def probe(server: DnsdiscProcess, name: str) -> tuple[str, str]:
    """Send probe ``name`` to ``server`` with dig: its arguments and dig's output."""
    dig = require_tool("dig")
    args = PROBES[name].replace("<zone>", ZONE)
    result = subprocess.run(
        [dig, f"@{server.dns_host}", "-p", str(server.dns_port), "+time=2", "+tries=1",
         *args.split()],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return args, result.stdout


def section(out: str, name: str) -> str:
    """The lines of dig's ``name`` section (ANSWER, AUTHORITY, ADDITIONAL); "" when absent."""
    if f";; {name} SECTION:\n" not in out:
        return ""
    return out.split(f";; {name} SECTION:\n", 1)[1].split("\n\n", 1)[0]


def seen_rrsig(out: str) -> bool:
    """Whether the answer section holds an RRSIG: genreport's ``seenrrsig``, which it reads
    from the answer section only."""
    return re.search(r"\tIN\tRRSIG\t", section(out, "ANSWER")) is not None


def judge(name: str, args: str, out: str) -> list[str]:
    """The tags genreport's ``process()`` would add for this reply (empty: ``ok``), read from
    dig's output: opcode, rcode, every header flag, the OPT record and the SOA."""
    opts = set(args.split())
    header = re.search(r"opcode: (\w+), status: (\w+), id: \d+", out)
    flags_line = re.search(r";; flags:([^;]*);", out)
    if header is None or flags_line is None:
        return ["noreply"]
    opcode, status = header.groups()
    flags = set(flags_line.group(1).split())
    opt = re.search(r"; EDNS: version: (\d+), flags:([^;]*);( MBZ: (0x[0-9a-f]+) ;)?", out)
    want_opcode = 15 if "+opcode=15" in opts else 0
    version = 1 if "+edns=1" in opts else 0
    want_do = "+dnssec" in opts
    edns = "+noedns" not in opts
    tags: list[str] = []
    if (opcode == "QUERY") != (want_opcode == 0):
        tags.append(opcode.lower())
    if version == 0 and want_opcode == 0 and status != "NOERROR":
        tags.append(status.lower())
    if want_opcode and status != "NOTIMP":
        tags.append(status.lower())
    if version and status != "BADVERS":
        tags.append(status.lower())
    if opt is not None and opt.group(1) != "0":
        tags.append("version-not-zero")
    if opt is None and edns:
        tags.append("noopt")
    if opt is not None and not edns:
        tags.append("opt")
    seen_soa = re.search(r"\tIN\tSOA\t", section(out, "ANSWER")) is not None
    soa_probe = args.endswith("SOA " + ZONE)
    if soa_probe and version == 0 and status == "NOERROR" and not seen_soa:
        tags.append("nosoa")
    if soa_probe and seen_soa and (version or status != "NOERROR"):
        tags.append("soa")
    if "; OPT=100" in out:
        tags.append("echoed")
    # genreport wants DO echoed only when signatures came back; wanted always here.
    if opt is not None and want_do and "do" not in opt.group(2).split():
        tags.append("nodo")
    # A DO+CD query whose signed answer came back without CD (genreport's "nocd").
    if (
        opt is not None
        and want_do
        and "+cd" in opts
        and "do" in opt.group(2).split()
        and "cd" not in flags
        and seen_rrsig(out)
    ):
        tags.append("nocd")
    if "aa" not in flags and version == 0 and status == "NOERROR" and not want_opcode:
        tags.append("noaa")
    if "aa" in flags and want_opcode:
        tags.append("aa")
    if "ra" in flags and want_opcode:
        tags.append("ra")
    if "rd" in flags and (want_opcode or "+rec" not in opts):
        tags.append("rd")
    if "rd" not in flags and "+rec" in opts and not want_opcode:
        tags.append("nord")
    if "ad" in flags and (want_opcode or ("+ad" not in opts and not want_do)):
        tags.append("ad")
    if "cd" in flags and (want_opcode or "+cd" not in opts):
        tags.append("cd")
    if "z" in flags or re.search(r"flags:[^;]*\bz\b", flags_line.group(0)):
        tags.append("z")
    if opt is not None and opt.group(4) is not None and int(opt.group(4), 16):
        tags.append("mbz")
    # Cookies (RFC 7873): a client cookie gets itself back with a server cookie, which dig
    # checks ("good"); the BADVERS reply to a version-1 query carries one as well.
    sent = re.search(r"\+cookie=([0-9a-f]+)", args)
    if sent is not None and not re.search(
        rf"; COOKIE: {sent.group(1)}[0-9a-f]{{16,64}} \(good\)", out
    ):
        tags.append("nocookie")
    # NSID: asked, it comes back (BADVERS replies to version 1 need not carry it), naming us.
    if "+nsid" in opts and version == 0 and not re.search(rf'; NSID: [0-9a-f ]+ \("{NSID}/', out):
        tags.append("nonsid")
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
    if "+ignore" in opts and size is not None and int(size.group(1)) > 512:
        tags.append("toobig")
    return tags


def noticed(args: str, out: str) -> list[str]:
    """What genreport appends to a probe's verdict, ok or not, about what came back: ``nsid``,
    ``expire``, ``cookie`` (``cookie-mismatch`` when the client cookie sent did not come back;
    ``+badcookie`` with that rcode) and ``subnet``."""
    tags = []
    if "; NSID:" in out:
        tags.append("nsid")
    if "; EXPIRE:" in out:
        tags.append("expire")
    cookie = re.search(r"; COOKIE: [0-9a-f]+( \(good\))?", out)
    if cookie is not None:
        sent = "+cookie=" in args
        tag = "cookie" if cookie.group(1) or not sent else "cookie-mismatch"
        if sent and "status: BADCOOKIE" in out:
            tag += "+badcookie"
        tags.append(tag)
    if "; CLIENT-SUBNET:" in out:
        tags.append("subnet")
    return tags


def verdict(name: str, args: str, out: str) -> str:
    """A probe's field in genreport's report line: ``ok`` or what was wrong, then what it
    noticed, joined by commas."""
    return ",".join((judge(name, args, out) or ["ok"]) + noticed(args, out))


def report(outs: dict[str, tuple[str, str]], names: tuple[str, ...]) -> str:
    """genreport's report line (after the server's name) for the probes ``names``, given each
    one's dig arguments and output: each ``name=verdict`` in its table's order and, before
    ``ednstcp``, the ``signed=`` field: the ``do`` probe's verdict, ``,yes`` added when its
    reply's answer section held an RRSIG."""
    words = []
    for name in names:
        if name == "ednstcp" and "do" in names:
            do = verdict("do", *outs["do"])
            words.append(f"signed={do}" + (",yes" if seen_rrsig(outs["do"][1]) else ""))
        words.append(f"{name}={verdict(name, *outs[name])}")
    return " ".join(words)
