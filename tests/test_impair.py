"""labctl impair: value checks and tc command lines (unit; the real refusal/rate were checked by hand)."""

import pytest

from labctl.errors import UsageError
from labctl.spec import netem

pytestmark = pytest.mark.unit


def test_spec_and_commands():
    s = netem.spec(delay="50ms", jitter="5ms", loss="5%", rate="10mbit")
    assert s == {"delay_ms": 50.0, "jitter_ms": 5.0, "loss_pct": 5.0, "rate_bit": 10_000_000}
    cmds = netem.commands("ens192", s)
    assert cmds[1] == "tc qdisc add dev ens192 root handle 1: netem delay 50ms 5ms loss 5%"
    assert cmds[2].startswith("tc qdisc add dev ens192 parent 1:1 handle 10: tbf rate 10000000bit")
    assert netem.commands("ens192", netem.spec(rate="1mbit"))[1].startswith(
        "tc qdisc add dev ens192 root handle 1: tbf"
    )


@pytest.mark.parametrize("kw", [{"loss": "150%"}, {"delay": "2min"}, {"rate": "1bit"}, {"jitter": "5ms"}, {}])
def test_out_of_range_is_usage_error(kw):
    with pytest.raises(UsageError):
        netem.spec(**kw)


def test_describe_tbf():
    assert netem.describe('[{"kind":"tbf","root":true,"options":{"rate":1250000}}]') == "rate 10mbit"
    assert netem.describe('[{"kind":"noqueue"}]') == ""
