"""TASO's graph_subst.pb: wire-format decoding, conversion to superopt rules, bad files."""

from pathlib import Path

import pytest

from superopt.core.errors import RulesError
from superopt.core.ir import Value
from superopt.core.pattern import Bindings, build
from superopt.core.types import FLOAT, TensorType
from superopt.verifier.taso import _Reader, decode, import_taso

PB = Path("/work/shared/external/taso/graph_subst.pb")
needs_pb = pytest.mark.skipif(not PB.exists(), reason=f"{PB} is not on this machine")


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _relu_rule_bytes() -> bytes:
    """Relu(x1) => Relu(x1): one op each side, input opId -1 (a 10-byte varint)."""
    tensor = _field(1, -1) + _field(2, 0)
    op = _field(1, 8) + _field(2, tensor)
    mapped = _field(1, 0) + _field(2, 0) + _field(3, 0) + _field(4, 0)
    return _field(1, _field(1, op) + _field(2, op) + _field(3, mapped))


def test_negative_int32_is_a_ten_byte_varint_and_decodes():
    assert len(_varint(-1)) == 10
    (rule,) = decode(_relu_rule_bytes())
    assert rule.src[0].type == 8 and rule.src[0].inputs == [(-1, 0)]
    assert rule.mapped == [(0, 0, 0, 0)]


def test_truncated_file_names_the_byte_offset():
    data = _relu_rule_bytes()
    with pytest.raises(RulesError, match=r"byte offset \d+"):
        decode(data[:-3])


def test_foreign_bytes_are_rejected_with_an_offset():
    with pytest.raises(RulesError, match="unexpected field 13 .* at byte offset 2"):
        decode(b"\x0a\x05hello")  # a length-delimited rule whose content is not a Rule
    with pytest.raises(RulesError, match="byte offset 0"):
        decode(b"PK\x03\x04 not protobuf")
    with pytest.raises(RulesError, match="varint longer than 10 bytes"):
        _Reader(b"\xff" * 11, 0, "x").varint()


def test_missing_file_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        import_taso(tmp_path / "none.pb")


@needs_pb
def test_all_133_rules_decode_and_convert():
    raw = decode(PB.read_bytes())
    assert len(raw) == 133
    rules = import_taso(PB)
    assert len(rules) == 133
    assert len({r.id for r in rules}) == 133  # duplicates in TASO's file get distinct ids
    assert rules[0].name == "taso-0" and rules[0].provenance["index"] == 0


@needs_pb
def test_every_converted_rule_type_checks_at_its_example_shapes():
    for r in import_taso(PB):
        b = Bindings({k: Value.input(k, TensorType(FLOAT, tuple(v)))
                      for k, v in r.example.items()})
        for s, d in zip(r.src, r.dst):
            assert build(s, b).shape == build(d, b).shape, r.name


@needs_pb
def test_taso_semantics_are_explicit():
    text = " ".join(str(p) for r in import_taso(PB) for p in r.src + r.dst)
    assert "(Relu (Conv[" in text or "(Relu (MatMul" in text  # ACTI became an explicit Relu
    assert "pads=(1, 1, 1, 1)" in text  # PAD SAME on 3x3 kernels
    assert "group=2" in text  # concatenated inputs and kernels: a grouped conv
    assert "split=(dim(?" in text  # Split at the sizes of the concatenated parts


def test_truncated_real_file_names_offset(tmp_path):
    if not PB.exists():
        pytest.skip(f"{PB} is not on this machine")
    p = tmp_path / "cut.pb"
    p.write_bytes(PB.read_bytes()[:1000])
    with pytest.raises(RulesError, match=r"byte offset \d+"):
        import_taso(p)
