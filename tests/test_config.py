from pathlib import Path

import pytest

from hub.config import load_config
from schemas.errors import ConfigError

GOOD = """
programme:
  points_per_unit: 2
connectors:
  shop:
    kind: shopify
    base_url: http://127.0.0.1:1
    token: ${SHOP_TOKEN}
"""


def write(tmp_path, text):
    path = tmp_path / "memberhub.yaml"
    path.write_text(text)
    return path


def test_secrets_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", "s3cret")
    config = load_config(write(tmp_path, GOOD))
    assert config.programme.points_per_unit == 2
    assert config.connectors["shop"].token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_missing_secret_names_file_line_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOP_TOKEN", raising=False)
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:8: connectors.shop.token needs the environment variable SHOP_TOKEN")


def test_default_after_colon_dash(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOP_TOKEN", raising=False)
    config = load_config(write(tmp_path, GOOD.replace("${SHOP_TOKEN}", "${SHOP_TOKEN:-fallback}")))
    assert config.connectors["shop"].token.get_secret_value() == "fallback"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (GOOD.replace("kind: shopify", "kind: shopfy"), ":6: connectors.shop.kind: Input should be"),
        (GOOD.replace("kind: shopify", "kind: shopfy"), "did you mean 'shopify'?"),
        (GOOD.replace("token:", "tokn:"), ":8: connectors.shop.tokn: unknown key 'tokn'; did you mean 'token'?"),
        (GOOD.replace("points_per_unit", "point_per_unit"), ":3: programme.point_per_unit: unknown key"),
        (GOOD.replace("programme:", "programe:"), ":2: programe: unknown key 'programe'; did you mean 'programme'?"),
    ],
)
def test_bad_config_names_line_and_closest_key(tmp_path, monkeypatch, broken, expected):
    monkeypatch.setenv("SHOP_TOKEN", "x")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, broken))
    assert expected in str(caught.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_config_is_valid():
    config = load_config(Path(__file__).resolve().parents[1] / "memberhub.yaml")
    assert set(config.connectors) == {"shopify", "square", "hubspot", "odoo"}
