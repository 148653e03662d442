"""slurmproto.confsyntax, slurmproto.conf and slurmproto.hostlist: syntax, includes, nodes, typed keys,
search order and errors (never reads /etc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from slurmproto.conf import (
    DEFAULT_SEARCH_PATHS,
    MAX_CONF_FILES,
    MAX_FILE_BYTES,
    MAX_HOSTLIST_NAMES,
    MAX_INCLUDE_DEPTH,
    MAX_NODE_DEFAULT_KEYS,
    MAX_NODES,
    MAX_TOTAL_BYTES,
    TYPED_KEYS,
    ConfError,
    NodeConf,
    SlurmConf,
    TypedKey,
    find_conf,
    load,
    parse_file,
    parse_text,
)
from slurmproto.confsyntax import Entry, read_text
from slurmproto.errors import SlurmError
from slurmproto.hostlist import expand_hostlist, hostlist_size

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def conf_of(tmp_path: Path, text: str) -> SlurmConf:
    return parse_file(write(tmp_path / "slurm.conf", text))


def error_of(tmp_path: Path, text: str, name: str = "slurm.conf") -> str:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfError) as info:
        parse_file(path)
    return str(info.value)


# --- syntax -------------------------------------------------------------------------------------------


def test_pairs_keys_case_insensitive_last_wins(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "ClusterName=one\nclustername=Two\nSlurmctldHost=a\nSLURMCTLDHOST=b(10.0.0.2)\n")
    assert conf.get("CLUSTERNAME") == "Two"
    assert conf.get("clusterName") == "Two"
    assert conf.get("SlurmctldHost") == "b(10.0.0.2)"
    assert conf.get("Missing") is None
    assert conf.get("Missing", "dflt") == "dflt"


def test_several_pairs_per_line_and_unknown_keys(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "SlurmdPort=7000 MessageTimeout=30   TotallyNewKey26=x\tOther.Key_2=y\n")
    assert conf.slurmd_port == 7000
    assert conf.message_timeout == 30
    assert conf.get("totallynewkey26") == "x"
    assert conf.get("other.key_2") == "y"


def test_whitespace_around_equals(tmp_path: Path) -> None:
    # Slurm's key=value regex allows blanks on both sides of "=", so "Key= Other=x" gives Key "Other=x".
    conf = conf_of(tmp_path, "SlurmdPort = 7001\nAuthAltTypes= auth/jwt\nMpiParams= SlurmdTimeout=2\n")
    assert conf.slurmd_port == 7001
    assert conf.get("AuthAltTypes") == "auth/jwt"
    assert conf.get("MpiParams") == "SlurmdTimeout=2"
    assert conf.get("SlurmdTimeout") is None


def test_quoted_values(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, 'SlurmdSpoolDir="/var/spool/my slurmd"\nEmpty=""\nMixed=a"b" Q="x y" R=z\n')
    assert conf.slurmd_spool_dir == "/var/spool/my slurmd"
    assert conf.get("Empty") == ""
    assert conf.get("Mixed") == 'a"b"'
    assert conf.get("Q") == "x y"
    assert conf.get("R") == "z"


def test_quote_followed_by_text_is_an_unquoted_value(tmp_path: Path) -> None:
    # Like Slurm's regex: "a"b does not end at the quote, so the whole run is the value, quotes included.
    assert conf_of(tmp_path, 'Key="a"b\n').get("Key") == '"a"b'


def test_comments_and_escapes(tmp_path: Path) -> None:
    text = (
        "# a comment line\n"
        "   # an indented one\n"
        "ClusterName=c1 # trailing comment\n"
        "A=x\\#y\n"  # \# is a literal #
        "B=x\\\\#y\n"  # \\ is a backslash, then # starts a comment
        "C=x\\\\\\#y\n"  # \\\# is a backslash and a literal #
        "D=p\\qr\n"  # a backslash escapes any character
    )
    conf = conf_of(tmp_path, text)
    assert conf.get("ClusterName") == "c1"
    assert conf.get("A") == "x#y"
    assert conf.get("B") == "x\\"
    assert conf.get("C") == "x\\#y"
    assert conf.get("D") == "pqr"


def test_hash_inside_quotes_still_starts_a_comment(tmp_path: Path) -> None:
    # Slurm strips comments before it looks at quotes.
    message = error_of(tmp_path, 'ClusterName=c\nFeature="a#b"\n')
    assert message.startswith(f"{tmp_path / 'slurm.conf'}:2: ")
    assert "unterminated" in message


def test_line_continuation(tmp_path: Path) -> None:
    text = (
        "NodeName=n1 \\\n"
        "   CPUs=4 \\   \n"  # blanks after the backslash do not matter
        "   RealMemory=100\n"
        "A=one\\\\\n"  # an even run of backslashes does not continue
        "B=two\n"
        "C=x\\\\\\\n"  # an odd run does: the last one continues, the two before are an escaped "\\"
        "y\n"
        "SlurmdPort=abc \\\n"
        "  # the comment on a continued line goes\n"
    )
    path = write(tmp_path / "slurm.conf", text + "D=last\\")
    with pytest.raises(ConfError) as info:
        parse_file(path)
    # The error is reported at the first physical line of the logical line.
    assert str(info.value) == f"{path}:8: SlurmdPort: 'abc' is not a number"

    conf = conf_of(tmp_path, text.replace("SlurmdPort=abc", "SlurmdPort=7002") + "D=last\\")
    assert conf.nodes["n1"].options == {"CPUs": "4", "RealMemory": "100"}
    assert conf.get("A") == "one\\"
    assert conf.get("B") == "two"
    assert conf.get("C") == "x\\y"
    assert conf.slurmd_port == 7002
    assert conf.get("D") == "last"  # a continuation on the last line simply ends


def test_continuation_keeps_blanks_before_the_backslash(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "A=1\\\n2\nB=1 \\\nC=2\n")
    assert conf.get("A") == "12"
    assert conf.get("B") == "1"
    assert conf.get("C") == "2"


def test_crlf_blank_and_empty_files(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "ClusterName=c\r\n\r\n   \r\nSlurmdPort=7003\r\nNodeName=n1 CPUs=2\r\n")
    assert conf.get("ClusterName") == "c"
    assert conf.slurmd_port == 7003
    assert conf.nodes["n1"].options["CPUs"] == "2"
    assert conf_of(tmp_path, "").nodes == {}
    assert conf_of(tmp_path, "# nothing\n\n").get("ClusterName") is None


def test_operator_before_equals_is_ignored(tmp_path: Path) -> None:
    assert conf_of(tmp_path, "Weight+=5\n").get("Weight") == "5"


def test_undecodable_bytes_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "slurm.conf"
    path.write_bytes(b"# caf\xe9\nClusterName=c\n")
    assert parse_file(path).get("ClusterName") == "c"


def test_parse_text(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "SlurmdPort=7004\n")
    conf = parse_text("ClusterName=t\nInclude inc.conf\n", tmp_path / "virtual.conf")
    assert conf.slurmd_port == 7004
    assert conf.path == tmp_path / "virtual.conf"
    with pytest.raises(ConfError, match=r"^<string>:1: expected Key=Value"):
        parse_text("junk\n")


def test_syntax_gives_neutral_entries_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "\nSlurmdPort=1 NodeName=n\n")
    entries = list(read_text('# c\nA=1 \\\n B="x y"\nInclude inc.conf\nC=2\n', str(tmp_path / "s.conf"),
                             lambda: None))
    assert entries == [
        Entry(str(tmp_path / "s.conf"), 2, [("A", "1"), ("B", "x y")]),
        Entry(str(tmp_path / "inc.conf"), 2, [("SlurmdPort", "1"), ("NodeName", "n")]),  # no key has a meaning
        Entry(str(tmp_path / "s.conf"), 5, [("C", "2")]),
    ]


def test_an_error_comes_before_a_later_include_is_read(tmp_path: Path) -> None:
    path = tmp_path / "slurm.conf"
    assert error_of(tmp_path, "SlurmdPort=x\nInclude missing.conf\n") == f"{path}:1: SlurmdPort: 'x' is not a number"


def test_syntax_asks_for_the_cluster_name_at_percent_c(tmp_path: Path) -> None:
    write(tmp_path / "named.conf", "X=1\n")
    asked: list[int] = []

    def cluster() -> str:
        asked.append(1)
        return "NAMED"

    entries = read_text("Include %c.conf\n", str(tmp_path / "s.conf"), cluster)
    assert asked == []  # read lazily: nothing before the entries are asked for
    assert [e.pairs for e in entries] == [[("X", "1")]]
    assert asked == [1]


# --- includes -----------------------------------------------------------------------------------------


def test_include_relative_absolute_and_case(tmp_path: Path) -> None:
    write(tmp_path / "rel.conf", "SlurmdPort=7005\n")
    absolute = write(tmp_path / "elsewhere" / "abs.conf", "MessageTimeout=33\n")
    conf = conf_of(tmp_path, f"ClusterName=c\nInclude rel.conf\nINCLUDE\t{absolute}\ninclude   rel.conf  \n")
    assert conf.slurmd_port == 7005
    assert conf.message_timeout == 33


def test_include_happens_in_place(tmp_path: Path) -> None:
    write(tmp_path / "mid.conf", "SlurmdPort=2\n")
    conf = conf_of(tmp_path, "SlurmdPort=1\nInclude mid.conf\n")
    assert conf.slurmd_port == 2
    conf = conf_of(tmp_path, "Include mid.conf\nSlurmdPort=3\n")
    assert conf.slurmd_port == 3


def test_nested_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    # What Slurm 22.05's parser does: sub/a.conf's "Include b.conf" reads sub/b.conf.
    write(tmp_path / "sub" / "a.conf", "Include b.conf\n")
    write(tmp_path / "sub" / "b.conf", "SlurmdPort=7006\n")
    write(tmp_path / "b.conf", "SlurmdPort=1\n")
    assert conf_of(tmp_path, "Include sub/a.conf\n").slurmd_port == 7006


def test_include_glob_sorted_and_no_match(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "20-b.conf", "ClusterName=b\nNodeName=n2\n")
    write(tmp_path / "conf.d" / "10-a.conf", "ClusterName=a\nNodeName=n1\n")
    write(tmp_path / "conf.d" / "30-c.txt", "ClusterName=wrong\n")
    conf = conf_of(tmp_path, "Include conf.d/*.conf\nInclude nothing/*.conf\nInclude none-[0-9].conf\n")
    assert conf.get("ClusterName") == "b"
    assert list(conf.nodes) == ["n1", "n2"]


def test_include_glob_in_a_directory_with_brackets(tmp_path: Path) -> None:
    # The directory of slurm.conf is not a pattern, only the Include argument is.
    top = tmp_path / "etc[1]"
    write(top / "x-1.conf", "SlurmdPort=7007\n")
    assert conf_of(top, "Include x-?.conf\n").slurmd_port == 7007


def test_include_percent_c(tmp_path: Path) -> None:
    write(tmp_path / "mycluster.conf", "SlurmdPort=7008\n")
    write(tmp_path / "mycluster-mycluster.conf", "MessageTimeout=44\n")
    conf = conf_of(tmp_path, "ClusterName=MyCluster\nInclude %c.conf\nInclude %c-%c.conf\n")
    assert conf.slurmd_port == 7008
    assert conf.message_timeout == 44


def test_include_percent_c_needs_cluster_name_first(tmp_path: Path) -> None:
    message = error_of(tmp_path, "Include %c.conf\nClusterName=late\n")
    assert message.startswith(f"{tmp_path / 'slurm.conf'}:1: ")
    assert "ClusterName" in message


def test_include_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, "ClusterName=c\n\nInclude missing.conf\n")
    assert message.startswith(f"{tmp_path / 'slurm.conf'}:3: Include {tmp_path / 'missing.conf'}: ")
    assert "No such file" in message


def test_include_error_inside_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.conf", "# first\nSlurmdPort=abc\n")
    message = error_of(tmp_path, "Include bad.conf\n")
    assert message == f"{tmp_path / 'bad.conf'}:2: SlurmdPort: 'abc' is not a number"


def test_include_recursion(tmp_path: Path) -> None:
    write(tmp_path / "loop.conf", "Include loop.conf\n")
    message = error_of(tmp_path, "Include loop.conf\n")
    assert message == (f"{tmp_path / 'loop.conf'}:1: Include {tmp_path / 'loop.conf'}: an Include loop (this "
                       "file is being read already: it includes itself, directly or through other files)")


def test_include_depth(tmp_path: Path) -> None:
    for level in range(1, MAX_INCLUDE_DEPTH + 2):
        write(tmp_path / f"{level}.conf", f"Include {level + 1}.conf\n")
    write(tmp_path / f"{MAX_INCLUDE_DEPTH + 1}.conf", "SlurmdPort=7011\n")
    assert conf_of(tmp_path, "Include 2.conf\n").slurmd_port == 7011  # 15 levels of Include below 1.conf
    message = error_of(tmp_path, "Include 1.conf\n")
    assert message == (f"{tmp_path / f'{MAX_INCLUDE_DEPTH}.conf'}:1: Include {MAX_INCLUDE_DEPTH + 1}.conf: "
                       f"nested more than {MAX_INCLUDE_DEPTH} deep")


def test_include_arguments(tmp_path: Path) -> None:
    assert "Include takes one path" in error_of(tmp_path, "Include a.conf b.conf\n")
    assert error_of(tmp_path, "Include \n").startswith(f"{tmp_path / 'slurm.conf'}:1: Include takes one path")
    # Not an Include directive: a key called Include, and a bare word.
    assert conf_of(tmp_path, "Include=x\n").get("include") == "x"
    assert "expected Key=Value, found 'Include'" in error_of(tmp_path, "Include\n")
    assert "expected Key=Value, found 'Includes'" in error_of(tmp_path, "Includes x\n")


# --- hostlists and nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "names"), [
    ("node1", ["node1"]),
    ("a,b c", ["a", "b", "c"]),
    ("node[01-04,7]", ["node01", "node02", "node03", "node04", "node7"]),
    ("a[1-010]", [f"a{i}" for i in range(1, 11)]),  # width comes from the low end
    ("y[001-5]", ["y001", "y002", "y003", "y004", "y005"]),
    ("x[8-10]-ib[1-2]", ["x8-ib1", "x8-ib2", "x9-ib1", "x9-ib2", "x10-ib1", "x10-ib2"]),
    ("n[1-2],m[3]", ["n1", "n2", "m3"]),
    ("10.0.0.[1-3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    ("[1-2]x", ["1x", "2x"]),
    ("a[5-]", ["a5"]),
    ("", []),
])
def test_expand_hostlist(expr: str, names: list[str]) -> None:
    # The expected values are what `scontrol show hostnames` prints (Slurm 22.05).
    assert expand_hostlist(expr) == names


@pytest.mark.parametrize("expr", ["", "a", "a,b c", "n[01-04,7]", "x[8-10]-ib[1-2],y", "a[5-]", "a[1,3-4][2-3]"])
def test_hostlist_size_is_the_number_of_names(expr: str) -> None:
    assert hostlist_size(expr) == len(expand_hostlist(expr))


@pytest.mark.parametrize("expr", [
    "a[1-2", "a]1", "a[[1]]", "a[]", "a[x-y]", "a[3-1]", "a[1,,2]", "a[-1]", "a[0-99999999]",
])
def test_expand_hostlist_errors(expr: str) -> None:
    with pytest.raises(ValueError):
        expand_hostlist(expr)


def test_nodes_pairing_and_defaults(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "NodeName=node[01-04,7] NodeAddr=10.0.0.[1-5]\n"
        "NodeName=h[1-2] NodeHostname=host[1-2]\n"
        "NodeName=plain\n"
        "NodeName=more NodeAddr=1.1.1.1,2.2.2.2\n"  # extra addresses are ignored
    ))
    assert list(conf.nodes) == ["node01", "node02", "node03", "node04", "node7", "h1", "h2", "plain", "more"]
    assert conf.nodes["node7"] == NodeConf("node7", "10.0.0.5", "node7", None, conf.nodes["node7"].options)
    assert conf.nodes["node02"].addr == "10.0.0.2"
    assert conf.nodes["node02"].hostname == "node02"  # NodeHostname defaults to NodeName
    # NodeAddr defaults to NodeHostname.
    assert (conf.nodes["h2"].hostname, conf.nodes["h2"].addr) == ("host2", "host2")
    assert (conf.nodes["plain"].hostname, conf.nodes["plain"].addr) == ("plain", "plain")
    assert conf.nodes["more"].addr == "1.1.1.1"


def test_node_default_lines(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "NodeName=DEFAULT CPUs=2 RealMemory=100 Port=7100\n"
        "NodeName=a CPUs=4\n"
        "nodename=default realmemory=200 Feature=x\n"
        "NodeName=b\n"
    ))
    assert dict(conf.nodes["a"].options) == {"CPUs": "4", "RealMemory": "100"}
    assert conf.nodes["a"].port == 7100
    b = conf.nodes["b"].options
    assert (b["cpus"], b["RealMemory"], b["FEATURE"]) == ("2", "200", "x")  # keys are case-insensitive
    assert "DEFAULT" not in conf.nodes and "default" not in conf.nodes
    assert len(conf.records["NodeName"]) == 4  # raw lines, DEFAULT included


@pytest.mark.parametrize("key", ["NodeAddr", "NodeHostname", "BcastAddr"])
def test_node_default_rejects_addresses(tmp_path: Path, key: str) -> None:
    message = error_of(tmp_path, f"ClusterName=c\nNodeName=DEFAULT {key}=x\n")
    assert message == f"{tmp_path / 'slurm.conf'}:2: {key} not allowed with NodeName=DEFAULT"


def test_node_too_few_addresses(tmp_path: Path) -> None:
    message = error_of(tmp_path, "NodeName=n[1-3] NodeAddr=10.0.0.[1-2]\n")
    path = tmp_path / "slurm.conf"
    assert message.startswith(f"{path}:1: at least as many NodeAddr are required as NodeName")
    message = error_of(tmp_path, "NodeName=n[1-3] NodeHostname=h1\n")
    assert "at least as many NodeHostname are required as NodeName" in message


def test_node_ports(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "SlurmdPort=6900\nNodeName=n[1-3] Port=[17001-17003]\nNodeName=m Port=0x1B59\n")
    assert [conf.nodes[f"n{i}"].port for i in (1, 2, 3)] == [17001, 17002, 17003]
    assert conf.nodes["m"].port == 7001
    assert conf.slurmd_port == 6900  # the port of nodes without a Port
    assert "Port" not in conf.nodes["n1"].options
    assert "Port count" in error_of(tmp_path, "NodeName=n[1-3] Port=[1-2]\n")
    path = tmp_path / "slurm.conf"
    assert error_of(tmp_path, "NodeName=n Port=x\n") == f"{path}:1: Port: 'x' is not a number"
    assert "not a port number" in error_of(tmp_path, "NodeName=n Port=70000\n")


def test_node_errors(tmp_path: Path) -> None:
    path = tmp_path / "slurm.conf"
    assert error_of(tmp_path, "NodeName=a\nNodeName=b,a\n") == f"{path}:2: duplicated NodeName a"
    assert error_of(tmp_path, "NodeName=n[1-\n").startswith(f"{path}:1: NodeName: bad hostlist 'n[1-'")
    assert error_of(tmp_path, "NodeName=a NodeAddr=x[2-1]\n").startswith(f"{path}:1: NodeAddr: bad hostlist")
    assert error_of(tmp_path, 'NodeName=""\n') == f"{path}:1: NodeName: empty"
    assert error_of(tmp_path, 'NodeName=a NodeAddr=""\n') == f"{path}:1: NodeAddr: empty"


def test_records_own_the_rest_of_the_line(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "SlurmdPort=7009 NodeName=n1 CPUs=2 SlurmdPort=1\n"
        "PartitionName=DEFAULT MaxTime=10\n"
        "PartitionName=p1 Nodes=n1 Default=YES\n"
        "NodeSet=ns Feature=gpu\n"
        "DownNodes=n1 Reason=broken State=DOWN\n"
    ))
    assert conf.slurmd_port == 7009  # the SlurmdPort after NodeName belongs to the node
    assert conf.nodes["n1"].options["SlurmdPort"] == "1"
    assert [dict(p) for p in conf.records["PartitionName"]] == [
        {"PartitionName": "DEFAULT", "MaxTime": "10"},
        {"PartitionName": "p1", "Nodes": "n1", "Default": "YES"},
    ]
    assert dict(conf.records["NodeSet"][0]) == {"NodeSet": "ns", "Feature": "gpu"}
    assert conf.records["DownNodes"][0]["reason"] == "broken"
    assert conf.get("NodeName") is None and conf.get("PartitionName") is None


def test_options_mapping(tmp_path: Path) -> None:
    options = conf_of(tmp_path, "NodeName=n Gres=gpu:2 gres=gpu:4 CPUs=1\n").nodes["n"].options
    assert list(options) == ["gres", "CPUs"]  # the later spelling and value win
    assert options["GRES"] == "gpu:4"
    assert options.get("cpus") == "1"
    assert options.get("nope") is None
    not_a_str: object = 42
    assert not_a_str not in options
    assert len(options) == 2
    assert "gres" in repr(options)


# --- typed keys ---------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "# empty\n")
    assert conf.slurmd_port == 6818
    assert conf.slurmd_spool_dir == "/var/spool/slurmd"
    assert conf.auth_type == "auth/munge"
    assert conf.auth_info is None
    assert conf.munge_socket is None
    assert conf.auth_ttl is None
    assert conf.message_timeout == 10
    assert conf.tcp_timeout == 2
    assert conf.slurm_user == "root"
    assert conf.slurmd_user == "root"
    assert not conf.has_communication_parameter("block_null_hash")
    assert conf.nodes == {}
    assert conf.records == {}


def test_typed_keys(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "SlurmdPort=6819\nSlurmdSpoolDir=/spool/%n\nAuthType=auth/slurm\nAuthAltTypes=auth/jwt,auth/munge\n"
        "MessageTimeout=0x1e\nTCPTimeout=010\nSlurmUser=slurm\nSlurmdUser=root\nClusterName=C\n"
        'CommunicationParameters="block_null_hash, disable_http,keepaliveinterval=30"\n'
        "HashPlugin=hash/sha3\nTLSType=tls/s2n\nPluginDir=/usr/lib/slurm\n"
    ))
    assert conf.slurmd_port == 6819
    assert conf.slurmd_spool_dir == "/spool/%n"
    assert conf.auth_type == "auth/slurm"
    assert conf.message_timeout == 30  # strtoul base 0, as Slurm parses numbers
    assert conf.tcp_timeout == 8
    assert conf.slurm_user == "slurm"
    assert conf.slurmd_user == "root"
    assert conf.has_communication_parameter("Block_Null_Hash")
    assert conf.has_communication_parameter("disable_http")
    assert conf.has_communication_parameter("keepaliveinterval")
    assert not conf.has_communication_parameter("block_zero_hash")
    assert conf.get("HashPlugin") == "hash/sha3"


# Each typed key: its spelling, the attribute that reads it, its default, and a value of its kind with
# what the attribute then gives.
TYPED: list[tuple[str, str, object, str, object]] = [
    ("SlurmdPort", "slurmd_port", 6818, "0x1B59", 7001),
    ("SlurmdSpoolDir", "slurmd_spool_dir", "/var/spool/slurmd", "/s/%n", "/s/%n"),
    ("AuthType", "auth_type", "auth/munge", "auth/slurm", "auth/slurm"),
    ("AuthInfo", "auth_info", None, "socket=/m,ttl=3", "socket=/m,ttl=3"),
    ("MessageTimeout", "message_timeout", 10, "UNLIMITED", 0xFFFF),
    ("TCPTimeout", "tcp_timeout", 2, "017", 15),
    ("SlurmUser", "slurm_user", "root", "slurm", "slurm"),
    ("SlurmdUser", "slurmd_user", "root", "4242", "4242"),
    ("ClusterName", "cluster_name", None, "c1", "c1"),
]


def test_the_key_table_lists_every_typed_key() -> None:
    attributes = {name: key for name, key in vars(SlurmConf).items() if isinstance(key, TypedKey)}
    assert {name: key.spelling for name, key in attributes.items()} == {c[1]: c[0] for c in TYPED}
    assert {key.spelling.lower(): key for key in attributes.values()} == TYPED_KEYS
    assert all(key.__doc__ and key.spelling in key.__doc__ for key in attributes.values())


@pytest.mark.parametrize(("spelling", "attribute", "default", "value", "typed"), TYPED, ids=[c[0] for c in TYPED])
def test_typed_key(tmp_path: Path, spelling: str, attribute: str, default: object, value: str,
                   typed: object) -> None:
    assert getattr(SlurmConf, attribute).default == default
    assert getattr(conf_of(tmp_path, "# unset\n"), attribute) == default
    conf = conf_of(tmp_path, f"{spelling.lower()}={value}\n")
    assert getattr(conf, attribute) == typed
    assert conf.get(spelling) == value
    if isinstance(default, str) or default is None:
        assert getattr(conf_of(tmp_path, f'{spelling}=""\n'), attribute) == default  # empty: the default


def test_a_conf_built_by_hand(tmp_path: Path) -> None:
    node = NodeConf("n1", "10.0.0.1", "h1", None, parse_text("NodeName=x CPUs=1\n").nodes["x"].options)
    conf = SlurmConf(tmp_path / "made.conf", {}, values={"SlurmdPort": "7012"}, nodes={"n1": node})
    assert (conf.slurmd_port, conf.tcp_timeout, conf.nodes["n1"], conf.guess_nodename("h1")) == (
        7012, 2, node, "n1")
    with pytest.raises(ConfError, match=r"made\.conf: SlurmdPort: 'x' is not a number"):
        _ = SlurmConf(tmp_path / "made.conf", values={"slurmdport": "x"}).slurmd_port


def test_infinite_timeout(tmp_path: Path) -> None:
    assert conf_of(tmp_path, "MessageTimeout=INFINITE\n").message_timeout == 0xFFFF


@pytest.mark.parametrize(("line", "message"), [
    ("SlurmdPort=abc", "SlurmdPort: 'abc' is not a number"),
    ("SlurmdPort=-1", "SlurmdPort: '-1' is not a number"),
    ("SlurmdPort=0", "SlurmdPort: '0' is not a port number (1-65535)"),
    ("SlurmdPort=65536", "SlurmdPort: '65536' is not a port number (1-65535)"),
    ("SlurmdPort=INFINITE", "SlurmdPort: 'INFINITE' is not a number"),
    ("slurmdport=08", "SlurmdPort: '08' is not a number"),  # octal, as strtoul(..., 0) reads it
    ("MessageTimeout=1.5", "MessageTimeout: '1.5' is not a number"),
    ("TCPTimeout=70000", "TCPTimeout: '70000' is greater than 65535"),
    ("TCPTimeout=1_0", "TCPTimeout: '1_0' is not a number"),
    ("TCPTimeout=0x", "TCPTimeout: '0x' is not a number"),
    ("TCPTimeout=+5", "TCPTimeout: '+5' is not a number"),
    ("TCPTimeout=\uff15", "TCPTimeout: '\uff15' is not a number"),
    ('TCPTimeout=""', "TCPTimeout: '' is not a number"),
    ("AuthInfo=ttl=soon", "AuthInfo ttl: 'soon' is not a number"),
])
def test_bad_numbers(tmp_path: Path, line: str, message: str) -> None:
    assert error_of(tmp_path, f"ClusterName=c\n{line}\n") == f"{tmp_path / 'slurm.conf'}:2: {message}"


@pytest.mark.parametrize(("info", "socket", "ttl"), [
    ("/run/munge/other.socket", "/run/munge/other.socket", None),  # legacy: the whole value is the socket
    ("socket=/run/m.sock", "/run/m.sock", None),
    ("ttl=60", None, 60),
    ("socket=/run/m.sock,ttl=120", "/run/m.sock", 120),
    ("TTL=5,Socket=/s", "/s", 5),
    ("cred_expire=10,socket=/a,socket=/b", "/a", None),  # the first one, like conf_get_opt_str()
    ("socket=", None, None),
])
def test_auth_info(tmp_path: Path, info: str, socket: str | None, ttl: int | None) -> None:
    conf = conf_of(tmp_path, f"AuthInfo={info}\n")
    assert conf.auth_info == info
    assert conf.munge_socket == socket
    assert conf.auth_ttl == ttl


def test_uids(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "SlurmUser=root\nSlurmdUser=4242\n")
    assert conf.slurm_uid() == 0
    assert conf.slurmd_uid() == 4242
    with pytest.raises(ConfError, match="SlurmUser 'no-such-user-xyz': no such user"):
        conf_of(tmp_path, "SlurmUser=no-such-user-xyz\n").slurm_uid()
    assert conf_of(tmp_path, "").slurmd_uid() == 0


# --- spool dir and node name guessing -----------------------------------------------------------------


def test_spool_dir_expansion(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "SlurmdSpoolDir=/var/spool/slurmd-%h-%n/%h/%n\n"
        "NodeName=node[1-2] NodeHostname=host[1-2]\n"
    ))
    # Only the first %h and the first %n, %h first (Slurm's xstrsubstitute).
    assert conf.spool_dir("node2") == "/var/spool/slurmd-host2-node2/%h/%n"
    assert conf.spool_dir("ghost") == "/var/spool/slurmd-ghost-ghost/%h/%n"


def test_spool_dir_percent_h_then_percent_n(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "SlurmdSpoolDir=/s/%h\nNodeName=n1 NodeHostname=h%n\n")
    # %h is replaced first, so a %n that the hostname brings in is then replaced too.
    assert conf.spool_dir("n1") == "/s/hn1"


def test_spool_dir_without_placeholders_or_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    assert conf_of(tmp_path, "SlurmdSpoolDir=/plain\n").spool_dir() == "/plain"
    assert conf_of(tmp_path, "").spool_dir(None) == "/var/spool/slurmd"
    conf = conf_of(tmp_path, "SlurmdSpoolDir=/s/%n\nNodeName=n1\n")
    monkeypatch.setenv("SLURMD_NODENAME", "n1")
    assert conf.spool_dir() == "/s/n1"
    monkeypatch.setenv("SLURMD_NODENAME", "")
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(nodename="nowhere.example.org"))
    with pytest.raises(ConfError, match="SLURMD_NODENAME"):
        conf.spool_dir()
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(nodename="n1.example.org"))
    assert conf.spool_dir() == "/s/n1"


def test_guess_nodename(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, (
        "NodeName=node1 NodeHostname=myhost NodeAddr=127.0.0.1\n"
        "NodeName=myhost\n"  # a NodeName equal to another node's hostname loses to that hostname
        "NodeName=node2 NodeHostname=full.example.org\n"
        "NodeName=node3 NodeHostname=h3\n"
        "NodeName=node4 NodeHostname=node3\n"
    ))
    env: dict[str, str] = {}
    assert conf.guess_nodename("myhost.example.org", env) == "node1"  # short hostname vs NodeHostname
    assert conf.guess_nodename("myhost", env) == "node1"
    assert conf.guess_nodename("node3.cluster", env) == "node4"  # a NodeHostname match comes first
    assert conf.guess_nodename("full.example.org", env) == "node2"  # then the full hostname
    assert conf.guess_nodename("elsewhere", env) is None
    assert conf.guess_nodename("elsewhere", {"SLURMD_NODENAME": "forced"}) == "forced"
    assert conf.guess_nodename("myhost", {"SLURMD_NODENAME": ""}) == "node1"


def test_guess_nodename_by_name_and_localhost(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, "NodeName=alpha\nNodeName=lo NodeHostname=localhost\n")
    assert conf.guess_nodename("alpha.example.org", {}) == "alpha"
    assert conf.guess_nodename("unknown", {}) == "lo"
    assert conf_of(tmp_path, "NodeName=localhost\n").guess_nodename("unknown", {}) == "localhost"


def test_guess_nodename_defaults_to_this_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    short = os.uname().nodename.partition(".")[0]
    conf = conf_of(tmp_path, f"NodeName=me NodeHostname={short}\n")
    assert conf.guess_nodename() == "me"
    monkeypatch.setenv("SLURMD_NODENAME", "other")
    assert conf.guess_nodename() == "other"


# --- finding slurm.conf -------------------------------------------------------------------------------


def test_find_conf_order(tmp_path: Path) -> None:
    first = tmp_path / "etc" / "slurm.conf"
    second = tmp_path / "run" / "slurm.conf"
    explicit = write(tmp_path / "explicit.conf", "ClusterName=explicit\n")
    from_env = write(tmp_path / "env.conf", "ClusterName=env\n")
    search = (str(first), str(second))
    env = {"SLURM_CONF": str(from_env)}

    with pytest.raises(ConfError) as info:
        find_conf(env={}, search=search)
    message = str(info.value)
    assert str(first) in message and str(second) in message and "SLURM_CONF" in message
    assert isinstance(info.value, SlurmError)

    write(second, "ClusterName=configless\n")
    assert find_conf(env={}, search=search) == second
    write(first, "ClusterName=etc\n")
    assert find_conf(env={}, search=search) == first
    assert find_conf(env={"SLURM_CONF": ""}, search=search) == first  # empty counts as unset
    assert find_conf(env=env, search=search) == from_env
    assert find_conf(explicit, env=env, search=search) == explicit
    assert find_conf(str(explicit), env=env, search=search) == explicit

    assert load(env={}, search=search).get("ClusterName") == "etc"
    assert load(env=env, search=search).get("ClusterName") == "env"
    assert load(explicit, env=env, search=search).get("ClusterName") == "explicit"
    assert load(explicit).path == explicit


def test_find_conf_explicit_or_env_path_missing(tmp_path: Path) -> None:
    existing = write(tmp_path / "etc.conf", "")
    missing = tmp_path / "missing.conf"
    # No falling back to the search list when a path was named.
    with pytest.raises(ConfError, match="explicitly"):
        find_conf(missing, env={}, search=(str(existing),))
    with pytest.raises(ConfError, match=r"\$SLURM_CONF") as info:
        find_conf(env={"SLURM_CONF": str(missing)}, search=(str(existing),))
    assert str(missing) in str(info.value)


def test_find_conf_uses_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "from-environ.conf", "SlurmdPort=7010\n")
    monkeypatch.setenv("SLURM_CONF", str(path))
    assert find_conf() == path
    assert load().slurmd_port == 7010


class _NoEnviron(dict[str, str]):
    """Stands in for os.environ: any read fails the test."""

    def _fail(self, *args: object, **kwargs: object) -> str:
        raise AssertionError("the process environment was read")

    __getitem__ = get = __contains__ = __iter__ = __len__ = keys = items = copy = _fail  # type: ignore[assignment]


def test_empty_env_reads_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # How the PAM hook calls it: slurm.conf from conf= or the standard places, never SLURM_CONF or
    # SLURMD_NODENAME from a PAM environment.
    etc = write(tmp_path / "etc" / "slurm.conf", "SlurmdSpoolDir=/spool/%n\nNodeName=n1 NodeHostname=h1\n")
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(nodename="h1.example.org"))
    monkeypatch.setattr(os, "environ", _NoEnviron())
    assert find_conf(env={}, search=(str(etc),)) == etc
    conf = load(env={}, search=(str(etc),))
    assert conf.env == {}
    assert (conf.guess_nodename(), conf.spool_dir()) == ("n1", "/spool/n1")
    assert load(etc, env={}).guess_nodename() == "n1"


def test_empty_env_ignores_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = write(tmp_path / "etc" / "slurm.conf", "SlurmdSpoolDir=/spool/%n\nNodeName=n1 NodeHostname=h1\n")
    planted = write(tmp_path / "planted.conf", "SlurmdSpoolDir=/attacker\n")
    monkeypatch.setenv("SLURM_CONF", str(planted))
    monkeypatch.setenv("SLURMD_NODENAME", "other")
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(nodename="h1"))
    conf = load(env={}, search=(str(etc),))
    assert conf.filename == str(etc)
    assert (conf.guess_nodename(), conf.spool_dir()) == ("n1", "/spool/n1")
    # Without env, the process environment still counts (slurm-callerid, like Slurm's commands).
    assert load(search=(str(etc),)).filename == str(planted)
    assert parse_file(etc).guess_nodename() == "other"


def test_default_search_paths() -> None:
    assert DEFAULT_SEARCH_PATHS == ("/etc/slurm/slurm.conf", "/run/slurm/conf/slurm.conf")


# --- malformed files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "lineno", "message"), [
    ('ClusterName=c\nAuthInfo="socket=/x\n', 2, "AuthInfo: unterminated quoted value"),
    ("ClusterName=c\nA=1 stray\n", 2, "expected Key=Value, found 'stray'"),
    ("loose\n", 1, "expected Key=Value, found 'loose'"),
    ("=value\n", 1, "expected Key=Value, found '=value'"),
    ("Bad-Key=1\n", 1, "expected Key=Value, found 'Bad-Key=1'"),
    ("\n\nKey=\n", 3, "Key: missing value"),
    ('Key="a b"c d\n', 1, "expected Key=Value, found 'b\"c'"),
    ("NodeName=n CPUs=2 junk\n", 1, "expected Key=Value, found 'junk'"),
])
def test_malformed_lines(tmp_path: Path, text: str, lineno: int, message: str) -> None:
    assert error_of(tmp_path, text).startswith(f"{tmp_path / 'slurm.conf'}:{lineno}: {message}")


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "dir.conf").mkdir()
    with pytest.raises(ConfError) as info:
        parse_file(tmp_path / "dir.conf")
    assert str(info.value).startswith(f"{tmp_path / 'dir.conf'}: cannot read: ")
    assert info.value.path == str(tmp_path / "dir.conf")
    assert info.value.lineno is None
    message = error_of(tmp_path, "ClusterName=c\nInclude dir.conf\n")
    assert message.startswith(f"{tmp_path / 'slurm.conf'}:2: Include {tmp_path / 'dir.conf'}: cannot read: ")


def test_error_attributes(tmp_path: Path) -> None:
    path = write(tmp_path / "slurm.conf", "SlurmdPort=x\n")
    with pytest.raises(ConfError) as info:
        parse_file(path)
    assert (info.value.path, info.value.lineno) == (str(path), 1)


# --- real-world shapes --------------------------------------------------------------------------------

DEBIAN_LIKE = """\
# slurm.conf file generated by configurator.html.
# Put this file on all nodes of your cluster.
ClusterName=localcluster
SlurmctldHost=localhost(127.0.0.1)
MpiDefault=none
ProctrackType=proctrack/linuxproc
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmctldPort=6817
SlurmdPidFile=/run/slurmd.pid
SlurmdPort=6818
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SwitchType=switch/none
TaskPlugin=task/none
#
# TIMERS
InactiveLimit=0
KillWait=30
MinJobAge=300
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
# SCHEDULING
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
#
#AccountingStoragePort=
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherFrequency=30
JobAcctGatherType=jobacct_gather/none
SlurmctldDebug=info
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdDebug=info
SlurmdLogFile=/var/log/slurm/slurmd.log
#
# COMPUTE NODES
NodeName=node1 NodeHostname=myhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES OverSubscribe=FORCE:8
"""


def test_debian_like_config(tmp_path: Path) -> None:
    conf = conf_of(tmp_path, DEBIAN_LIKE)
    assert conf.get("ClusterName") == "localcluster"
    assert conf.get("SlurmctldHost") == "localhost(127.0.0.1)"
    assert conf.slurmd_port == 6818
    assert conf.slurmd_spool_dir == "/var/lib/slurm/slurmd"
    assert conf.slurm_user == "slurm"
    assert conf.get("SelectType") == "select/cons_tres"
    assert conf.get("AccountingStoragePort") is None
    node = conf.nodes["node1"]
    assert (node.name, node.hostname, node.addr, node.port) == ("node1", "myhost", "127.0.0.1", None)
    assert dict(node.options) == {"CPUs": "2", "State": "UNKNOWN"}
    assert [dict(p) for p in conf.records["PartitionName"]] == [
        {"PartitionName": "debug", "Nodes": "ALL", "Default": "YES", "OverSubscribe": "FORCE:8"},
    ]
    assert conf.guess_nodename("myhost", {}) == "node1"
    assert conf.spool_dir("node1") == "/var/lib/slurm/slurmd"
    assert repr(conf) == f"<SlurmConf {tmp_path / 'slurm.conf'} (31 keys, 1 nodes)>"


def test_parsing_is_fast(tmp_path: Path) -> None:
    path = write(tmp_path / "slurm.conf", DEBIAN_LIKE + "NodeName=n[0001-0008] CPUs=64\n")
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        parse_file(path)
    per_parse = (time.perf_counter() - start) / runs
    assert per_parse < 0.005  # typically ~0.1 ms; generous for slow CI machines


def test_import_is_light() -> None:
    # typing is imported by the rest of the package anyway; beyond it, conf adds only itself and its helpers
    # (no dataclasses: with inspect, it costs milliseconds on the login path).
    code = (
        "import sys, typing; before = set(sys.modules); import slurmproto.conf; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=REPO).stdout.split()
    assert set(out) <= {"__future__", "slurmproto", "slurmproto.conf", "slurmproto.confsyntax", "slurmproto.errors",
                      "slurmproto.hostlist"}, out


def test_fast_path_agrees_with_the_scanner() -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from slurmproto.confsyntax import _fast_pairs, _scan_pairs

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet='ab_.=" \t-+#x\\', max_size=30))
    def check(line: str) -> None:
        fast = _fast_pairs(line)
        if fast is not None:
            assert fast == _scan_pairs(line, "p", 1)

    check()


# --- hostile configurations: only ConfError, bounded time and memory --------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def _files(top: Path, names: int, text: str = "") -> Path:
    top.mkdir()
    for i in range(names):
        (top / f"{i:05}.conf").write_text(text)
    return top


def _binary_tree(top: Path, levels: int) -> Path:
    # Level k holds two files that each include both files of level k+1: 2**levels reads, no loop.
    for level in range(levels):
        for side in "ab":
            write(top / f"l{level}" / f"{side}.conf", f"Include ../l{level + 1}/*.conf\n" if level + 1 < levels
                  else "ClusterName=leaf\n")
    return top / "l0" / "a.conf"


# (name, the file (a function of the directory returning its path), the error expected, the tracemalloc
#  peak allowed in MiB): each read as slurm.conf and Included from it.
HOSTILE_FILES: list[tuple[str, Callable[[Path], Path], str, int]] = [
    ("dev-zero", lambda d: Path("/dev/zero"), "cannot read: a character device", 1),
    ("fifo", lambda d: _fifo(d / "fifo"), "cannot read: a FIFO", 1),
    ("directory", lambda d: d, "cannot read: a directory", 1),
    ("socket", lambda d: _socket(d / "sock"), "cannot read: a socket", 1),
    ("endless-proc-file", lambda d: Path("/proc/self/pagemap"), f"larger than {MAX_FILE_BYTES} bytes", 12),
    ("huge-sparse-file", lambda d: _sparse(d / "huge.conf", 1 << 40), f"larger than {MAX_FILE_BYTES} bytes", 1),
    ("file-over-limit", lambda d: _sparse(d / "big.conf", MAX_FILE_BYTES + 1), f"larger than {MAX_FILE_BYTES}", 1),
    ("includes-over-total", lambda d: _total_over(d), f"larger than {MAX_TOTAL_BYTES} bytes with this file", 12),
    ("include-tree-of-65536-reads", lambda d: _binary_tree(d / "tree", 16),
     f"limit of {MAX_CONF_FILES} files for one configuration", 2),
    ("include-loop", lambda d: _loop(d), "an Include loop", 1),
]
# (name, what slurm.conf holds, the error expected, the tracemalloc peak allowed in MiB)
HOSTILE_TEXTS: list[tuple[str, str, str, int]] = [
    ("glob-of-thousands", "Include many/*.conf\n", "matches more than the 255 files left", 2),
    ("nul-byte", "ClusterName=c\nSlurmdPort=6818\0Include /etc/shadow\n", "2: NUL byte", 1),
    ("too-many-nodes", "NodeName=a[0-40000]\nNodeName=b[0-40000]\n", f"more than {MAX_NODES} nodes", 8),
    ("node-range-of-a-billion", "NodeName=n[0-999999999]\n", f"more than {MAX_NODES} nodes", 1),
    ("address-lists-per-line", "".join(f"NodeName=n{i} NodeAddr=x[0-65535]\n" for i in range(5)),
     f"expand to more than {MAX_HOSTLIST_NAMES} names", 10),  # 7.9 MiB measured alone
    ("node-default-keys", "NodeName=DEFAULT " + " ".join(f"K{i}=1" for i in range(300)) + "\n",
     f"more than {MAX_NODE_DEFAULT_KEYS} keys", 1),
    ("long-bad-line", "Bad-" + "x" * (2 << 20) + "=1\n", "expected Key=Value, found 'Bad-xxx", 12),
    ("undecodable-key", "Clust\udce9rName=1\n", "expected Key=Value, found 'Clust\\udce9rName=1'", 1),
    ("include-name-too-long", "Include " + "x" * 5000 + "\n", "File name too long", 1),
    ("include-percent-c-unset", "Include %c/%c/%c\n", "%c needs ClusterName", 1),
    ("glob-thousands-deep", "Include " + "*/" * 2000 + "x\n", "a wildcard path more than 64 directories deep", 1),
    ("glob-brackets-deep", "Include " + "[a/" * 1300 + "x\n", "a wildcard path more than 64 directories deep", 1),
    ("hostlist-of-2000-bracket-groups", "NodeName=a" + "[1]" * 2000 + "\n", "more than 16 bracket groups", 2),
    ("port-of-2000-bracket-groups", "NodeName=a Port=" + "[1]" * 2000 + "\n", "more than 16 bracket groups", 2),
    ("glob-of-proc", "Include /proc/*/task/*/fd/*\n", "matches more than the 255 files left", 2),
]


def _loop(top: Path) -> Path:
    write(top / "b.conf", "Include a.conf\n")
    return write(top / "a.conf", "Include b.conf\n")


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def _total_over(top: Path) -> Path:
    third = (MAX_TOTAL_BYTES // 3) + 1
    for name in ("1", "2", "3"):
        write(top / f"{name}.conf", "#" * third + "\n")
    return write(top / "all.conf", "Include 1.conf\nInclude 2.conf\nInclude 3.conf\n")


def _refused_within_bounds(path: Path, expected: str, mib: int) -> None:
    import tracemalloc

    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(ConfError) as info:
            parse_file(path)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert expected in message
    assert len(message) < 1500 and message.encode("utf-8")  # fit for syslog and any UTF-8 terminal
    assert message.isprintable()
    assert elapsed < 5.0
    assert peak < mib << 20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "make", "expected", "mib"), HOSTILE_FILES, ids=[c[0] for c in HOSTILE_FILES])
@pytest.mark.parametrize("how", ["slurm.conf", "Include"])
def test_hostile_file(tmp_path: Path, name: str, make: Callable[[Path], Path], expected: str, mib: int,
                      how: str) -> None:
    target = make(tmp_path)
    path = target if how == "slurm.conf" else write(tmp_path / "top.conf", f"Include {target}\n")
    _refused_within_bounds(path, expected, mib)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "text", "expected", "mib"), HOSTILE_TEXTS, ids=[c[0] for c in HOSTILE_TEXTS])
def test_hostile_text(tmp_path: Path, name: str, text: str, expected: str, mib: int) -> None:
    _files(tmp_path / "many", 3000)
    path = tmp_path / "slurm.conf"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    _refused_within_bounds(path, expected, mib)


def test_permission_denied_says_so(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        path = write(Path(top) / "slurm.conf", "ClusterName=c\n")
        path.chmod(0o000 if os.geteuid() else 0o600)
        including = write(Path(top) / "top.conf", f"Include {path}\n")
        including.chmod(0o644)
        if os.geteuid() == 0:
            os.seteuid(65534)  # root reads anything; nobody cannot read root's 0600 file
        try:
            with pytest.raises(ConfError) as direct:
                parse_file(path)
            with pytest.raises(ConfError) as included:
                parse_file(including)
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
    assert str(direct.value) == f"{path}: cannot read: Permission denied"
    assert str(included.value) == f"{including}:1: Include {path}: cannot read: Permission denied"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "text"), [
    ("one long value", "NodeName=n Feature=" + "x" * (MAX_FILE_BYTES - 100) + "\n"),
    ("escaped hashes", "A=" + "\\#" * (MAX_FILE_BYTES // 2 - 10) + "\n"),
    ("backslashes then a hash", "A=x" + "\\" * (MAX_FILE_BYTES - 20) + "#\n"),
    ("blank lines", "\n" * (MAX_FILE_BYTES - 10)),
    ("continued lines", "A=x\\\n" * (MAX_FILE_BYTES // 5 - 10)),
])
def test_big_files_within_the_limit_parse_in_bounded_time(tmp_path: Path, name: str, text: str) -> None:
    # The quadratic comment scan this once had took hours on the escaped hashes.
    path = write(tmp_path / "slurm.conf", text)
    start = time.monotonic()
    parse_file(path)
    assert time.monotonic() - start < 10.0


def test_error_is_one_printable_line(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "x\nroot allowed\t.conf", "junk\n")
    message = error_of(tmp_path, "Include conf.d/*.conf\n")
    assert message == f"{tmp_path / 'conf.d'}/x\\x0aroot allowed\\x09.conf:1: expected Key=Value, found 'junk'"


def test_nul_in_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfError) as info:
        parse_file("a\0b")
    assert str(info.value) == "a\\x00b: cannot read: a NUL byte in the path"
    with pytest.raises(ConfError, match="no such file"):
        load("a\0b", env={})


def test_undecodable_bytes_in_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "slurm.conf"
    path.write_bytes(b"ClusterName=caf\xe9\nNodeName=n\xff1\n")
    conf = parse_file(path)
    assert conf.get("ClusterName") == "caf\udce9"
    assert list(conf.nodes) == ["n\udcff1"]


# --- random input: only ConfError escapes -----------------------------------------------------------

# Pieces of slurm.conf syntax, so that random text reaches past the first line's error.
_PIECES = ["\n", " ", "\t", "=", '"', "#", "\\", "\\\n", "[", "]", "-", ",", "%c", "*", "?", "\0", "\udce9", "é",
           "Include ", "include\t", "NodeName=", "DEFAULT", "NodeAddr=", "NodeHostname=", "Port=", "SlurmdPort=",
           "MessageTimeout=", "AuthInfo=", "ttl=", "socket=", "ClusterName=", "PartitionName=", "n[1-3]",
           "0x1f", "017", "99999999999", "INFINITE", "a", "b.conf", "/", "../", "sub/"]


def _only_conf_errors(parse: Callable[[], object]) -> None:
    try:
        parse()
    except ConfError as exc:
        assert str(exc).encode("utf-8")  # printable on any UTF-8 stream


def test_random_text_raises_only_conf_error(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    repeated = st.tuples(st.sampled_from([*_PIECES, "[1]", "*/", "a[", "a=b "]), st.integers(1, 3000)).map(
        lambda piece: piece[0] * piece[1])  # long runs: deep recursions, quadratic scans
    texts = st.lists(st.sampled_from(_PIECES) | st.text(max_size=8) | repeated, max_size=60).map("".join)

    @settings(max_examples=1500, deadline=None)
    @given(st.one_of(texts, st.text(max_size=300)))
    def check(text: str) -> None:
        _only_conf_errors(lambda: parse_text(text, tmp_path / "slurm.conf"))

    check()


def test_random_bytes_raise_only_conf_error(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(_PIECES).map(lambda p: p.encode("utf-8", "surrogateescape"))

    @settings(max_examples=500, deadline=None)
    @given(st.one_of(st.binary(max_size=300), st.lists(pieces | st.binary(max_size=4), max_size=60).map(b"".join)))
    def check(data: bytes) -> None:
        path = tmp_path / "slurm.conf"
        path.write_bytes(data)
        _only_conf_errors(lambda: parse_file(path))

    check()


_NAMES = ["a.conf", "b.conf", "sub/c.conf", "sub/d.conf", "x.conf"]


def test_random_include_trees_raise_only_conf_error(tmp_path: Path) -> None:
    import shutil

    from hypothesis import given, settings
    from hypothesis import strategies as st

    include = st.sampled_from(["a.conf", "b.conf", "sub/c.conf", "c.conf", "../a.conf", "*.conf", "sub/*",
                               "s?b/*.conf", "[ab].conf", "%c.conf", "missing.conf", "sub", "/dev/null",
                               "/dev/zero", "x.conf", "x.conf x.conf", ""]).map(lambda p: f"Include {p}")
    line = include | st.sampled_from(["ClusterName=x", "NodeName=n[1-2]", "NodeName=n1", "SlurmdPort=1",
                                      "NodeName=DEFAULT Port=2", "junk", "# c", "A=\\", ""])
    files = st.dictionaries(st.sampled_from(_NAMES), st.lists(line, max_size=6).map("\n".join), max_size=5)

    @settings(max_examples=400, deadline=None)
    @given(files, st.lists(line, max_size=6).map("\n".join))
    def check(tree: dict[str, str], top: str) -> None:
        root = tmp_path / "tree"
        shutil.rmtree(root, ignore_errors=True)
        for name, text in tree.items():
            write(root / name, text)
        write(root / "slurm.conf", top)
        _only_conf_errors(lambda: parse_file(root / "slurm.conf"))

    check()


def test_expand_hostlist_of_many_groups_is_no_recursion() -> None:
    assert expand_hostlist("a" + "[1]" * 3000) == ["a" + "1" * 3000]
