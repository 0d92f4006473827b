"""memberhub.yaml → how staging normalises: provider-specific email rewriting (dots, plus tags) is off
unless ``programme.email_rewrite`` turns it on, and then only for the providers it names."""

import pytest
from sqlalchemy import select

from connectors import Page
from hub import staging
from hub.config import load_config
from hub.ingest import store_page
from hub.search import ContactRules
from hub.service import Hub
from hub.staging import StageOptions
from hub.tables import StagedMember
from mappings import load_mapping
from schemas import HubConfig
from schemas.errors import ConfigError

MAPPING = """\
source: testpos
stream: members
target: member
fields:
  source_id: id
  channel: "'pos'"
  email: mail
"""


@pytest.fixture
def mapping(tmp_path):
    (tmp_path / "members.yaml").write_text(MAPPING)
    return load_mapping(tmp_path / "members.yaml")


def options_from(tmp_path, programme: str) -> StageOptions:
    path = tmp_path / "memberhub.yaml"
    path.write_text(f"programme:\n  default_region: CN\n{programme}")
    return StageOptions.of(load_config(path).programme)


@pytest.mark.parametrize(
    ("programme", "raw", "staged"),
    [
        ("", "J.Smith+shop@Gmail.com", "j.smith+shop@gmail.com"),  # off by default
        ("  email_rewrite: []\n", "J.Smith+shop@Gmail.com", "j.smith+shop@gmail.com"),
        ("  email_rewrite: [gmail.com]\n", "J.Smith+shop@Gmail.com", "jsmith@gmail.com"),
        ("  email_rewrite: [gmail.com]\n", "j.smith+shop@googlemail.com", "jsmith@gmail.com"),
        ("  email_rewrite: [gmail.com]\n", "j.smith+shop@outlook.com", "j.smith+shop@outlook.com"),
        ("  email_rewrite: [outlook.com]\n", "j.smith+shop@outlook.com", "j.smith@outlook.com"),
        ("  email_rewrite: ['*']\n", "j.smith+shop@outlook.com", "j.smith@outlook.com"),
        ("  email_rewrite: ['*']\n", "j.smith-shop@yahoo.com", "j.smith@yahoo.com"),
        ("  email_rewrite: ['*']\n", "li.lei+vip@qq.com", "li.lei+vip@qq.com"),  # not a known provider
    ],
)
def test_email_rewriting_follows_the_configuration(tmp_path, mapping, programme, raw, staged):
    options = options_from(tmp_path, programme)
    values = staging.member_values(mapping, {"id": "1", "mail": raw}, "pos", options)
    assert values["email"] == staged


def test_a_hub_without_the_setting_stages_with_the_defaults():
    assert StageOptions.of(HubConfig().programme) == StageOptions(region="CN", email_rewrite=frozenset())


@pytest.mark.parametrize(
    ("programme", "message"),
    [
        (
            "  email_rewrite: [gmial.com]\n",
            "'gmial.com' is not a mail provider whose address variants are known; did you mean 'gmail.com'?",
        ),
        ("  email_rewrite: [qq.com]\n", "'qq.com' is not a mail provider whose address variants are known (known: "),
        ("  email_rewrite: [Gmail]\n", "programme.email_rewrite.0: String should match pattern"),
    ],
)
def test_unknown_providers_are_refused(tmp_path, programme, message):
    with pytest.raises(ConfigError) as raised:
        options_from(tmp_path, programme)
    assert message in str(raised.value)
    if "pattern" not in message:  # search and lookups read the setting as staging does, and refuse it alike
        path = tmp_path / "memberhub.yaml"
        with pytest.raises(ConfigError, match="is not a mail provider"):
            ContactRules.of(load_config(path).programme)


@pytest.mark.parametrize("rewrite", [None, "[gmail.com]"])
def test_the_hub_stages_with_the_configured_switch(tmp_path, database_url, monkeypatch, rewrite):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "test-key-of-32-characters-long!!")
    path = tmp_path / "memberhub.yaml"
    path.write_text("programme:\n  default_region: CN\n" + (f"  email_rewrite: {rewrite}\n" if rewrite else ""))
    hub = Hub(config_path=path, database_url=database_url)
    customer = {"id": 7, "first_name": "Jane", "last_name": "Smith", "email": "J.Smith+shop@gmail.com"}
    with hub.session() as session, session.begin():
        store_page(session, "shopify", "customers", "id", Page([customer]))
    assert hub.stage()["members"] == 1
    with hub.session() as session:
        staged = session.scalars(select(StagedMember)).one()
    assert staged.email == ("jsmith@gmail.com" if rewrite else "j.smith+shop@gmail.com")
