"""The service units log to journald as `kafkapipe`, at each line's own priority."""

import pytest
from test_export_units import SYSTEMD, unit

SERVICES = ("kafkapipe.service", "kafkapipe@.service", "kafkapipe-export.service")


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_logs_as_kafkapipe_with_level_prefixes(name):
    service = unit(name)["Service"]
    assert service["SyslogIdentifier"] == "kafkapipe"
    assert service.get("SyslogLevelPrefix", "yes") == "yes"  # <N> from kafkapipe.log sets the level


def test_instances_are_told_apart_in_the_journal_and_can_get_their_own_metrics_port():
    service = unit("kafkapipe@.service")["Service"]
    assert service["LogExtraFields"] == "KAFKAPIPE_INSTANCE=%i"
    assert service["EnvironmentFile"] == "-/etc/kafkapipe/%i.env"
    assert "KAFKAPIPE_METRICS__BIND=" in (SYSTEMD / "kafkapipe@.service").read_text()
