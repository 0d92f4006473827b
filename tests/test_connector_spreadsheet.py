"""The spreadsheet connector: member lists saved as UTF-8, UTF-8 with BOM, GBK and GB18030 CSV and
as .xlsx, Chinese titles renamed by the header map, empty rows skipped, a row without an id
quarantined with its row number, and the whole way to staged members."""

from __future__ import annotations

import json
from datetime import datetime

import openpyxl
import pytest
from sqlalchemy import select

from connectors import connector_for
from hub.config import load_config
from hub.service import Hub
from hub.tables import QuarantineRow, SourceRecordRow, StagedMember
from schemas import ConnectorConfig
from schemas.errors import ConfigError, FatalError

TITLES = ["会员卡号", "姓名", "手机号", "性别", "生日", "开卡门店", "备注"]
HEADER = {
    "会员卡号": "card_no",
    "姓名": "name",
    "手机号": "mobile",
    "性别": "gender",
    "生日": "birthday",
    "开卡门店": "store",
}
ROWS = [
    ["VIP0001", "王芳", "138 0013 8000", "女", "1990-05-01", "SH01", "老会员"],
    ["VIP0002", "李强", "+86 139-0013-9000", "男", "1985/12/24", "BJ01", ""],
    ["", "无卡号", "13700137000", "男", "", "GZ01", "卡号漏填"],  # no id: quarantined, not dropped
    ["", "", "", "", "", "", ""],  # an empty row: skipped
    ["VIP0004", "張偉", "13600136000", "", "", "", "繁体字"],
]
# rows as a person sees them: the header is row 1, the row without an id is row 4, the empty one row 5
EXPECTED_ROWS = {"VIP0001": 2, "VIP0002": 3, None: 4, "VIP0004": 6}


def write_csv(path, encoding: str, rows=ROWS, titles=TITLES, delimiter=","):
    lines = [delimiter.join(titles)] + [delimiter.join(row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def sheet_config(path, **settings) -> ConnectorConfig:
    return ConnectorConfig(kind="spreadsheet", path=str(path), header=HEADER, id_column="card_no", **settings)


def read(config):
    with connector_for("member_sheet", config) as connector:
        return [r for page in connector.read("members", None) for r in page.records]


@pytest.mark.parametrize(("encoding", "detected"), [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("gbk", "gbk")])
def test_csv_encodings_are_detected_and_titles_mapped(tmp_path, encoding, detected):
    path = write_csv(tmp_path / "members.csv", encoding)
    records = read(sheet_config(path))
    assert {r["card_no"]: r["_row"] for r in records} == EXPECTED_ROWS
    first = records[0]
    assert first == {
        "_file": "members.csv",
        "_row": 2,
        "card_no": "VIP0001",
        "name": "王芳",
        "mobile": "138 0013 8000",
        "gender": "女",
        "birthday": "1990-05-01",
        "store": "SH01",
        "备注": "老会员",  # unmapped titles are kept
    }
    assert records[1]["备注"] is None  # a blank cell is null
    with connector_for("member_sheet", sheet_config(path)) as connector:
        steps = connector.check()
    assert all(s.ok for s in steps), steps
    assert f"encoding {detected}," in steps[1].detail
    assert "4 row(s)" in steps[1].detail
    assert "1 row(s) without card_no will be quarantined (first: row 4)" in steps[1].detail
    assert "kept under their own titles: 备注" in steps[1].detail


def test_gb18030_when_gbk_cannot_hold_a_name(tmp_path):
    rows = [["VIP0009", "刘䶮", "13500135000", "男", "", "", ""]]
    with pytest.raises(UnicodeEncodeError):
        "䶮".encode("gbk")
    path = write_csv(tmp_path / "rare.csv", "gb18030", rows=rows)
    with connector_for("member_sheet", sheet_config(path)) as connector:
        assert connector.detect_encoding(path) == "gb18030"
        assert [r["name"] for p in connector.read("members", None) for r in p.records] == ["刘䶮"]


def test_a_configured_encoding_is_used_and_a_wrong_one_explained(tmp_path):
    path = write_csv(tmp_path / "members.csv", "gbk")
    assert read(sheet_config(path, encoding="gb18030"))[0]["name"] == "王芳"
    with pytest.raises(FatalError, match=r"members.csv is not utf-8 text .*set the connector's `encoding`"):
        read(sheet_config(path, encoding="utf-8"))


def test_tab_separated_utf16_from_excel_unicode_text(tmp_path):
    path = write_csv(tmp_path / "members.txt", "utf-16", delimiter="\t")
    assert {r["card_no"]: r["_row"] for r in read(sheet_config(path))} == EXPECTED_ROWS


def test_xlsx_with_a_title_row_typed_cells_and_a_chosen_sheet(tmp_path):
    book = openpyxl.Workbook()
    book.active.title = "说明"
    book.active.append(["这张表不是会员"])
    sheet = book.create_sheet("会员")
    sheet.append(["2023年会员名单"])  # a title line above the header
    sheet.append(TITLES)
    sheet.append(["VIP0001", "王芳", 13800138000, "女", datetime(1990, 5, 1), "SH01", None])
    sheet.append([None] * len(TITLES))
    sheet.append([None, "无卡号", "13700137000", "男", None, "GZ01", None])
    sheet.append(["VIP0003", "赵敏", "13900139000", "女", datetime(1992, 2, 3, 14, 30), "BJ02", "下午开卡", "多出一列"])
    path = tmp_path / "members.xlsx"
    book.save(path)

    records = read(sheet_config(path, sheet="会员"))
    assert [(r["card_no"], r["_row"]) for r in records] == [("VIP0001", 3), (None, 5), ("VIP0003", 6)]
    first, _, last = records
    json.dumps(records)
    assert first["mobile"] == 13800138000  # a number typed into Excel, whole
    assert first["birthday"] == "1990-05-01"  # a date cell
    assert last["birthday"] == "1992-02-03T14:30:00+08:00"  # a time, in the connector's zone
    assert last["column 8"] == "多出一列"
    with pytest.raises(FatalError, match="has no sheet '会园'; did you mean '会员'"):
        read(sheet_config(path, sheet="会园"))


def test_a_file_without_the_id_column_is_refused_with_its_titles(tmp_path):
    path = write_csv(tmp_path / "members.csv", "utf-8", titles=["会员卡", *TITLES[1:]])
    with pytest.raises(FatalError, match=r"has no id column '会员卡号' in its header .*did you mean '会员卡'"):
        read(sheet_config(path))


def test_a_glob_reads_every_file_and_an_empty_glob_is_explained(tmp_path):
    write_csv(tmp_path / "a.csv", "utf-8")
    write_csv(tmp_path / "b.csv", "gbk", rows=[["VIP0100", "周杰", "13100131000", "男", "", "", ""]])
    records = read(sheet_config(tmp_path / "*.csv", page_size=2))
    assert [(r["_file"], r["card_no"]) for r in records][-2:] == [("a.csv", "VIP0004"), ("b.csv", "VIP0100")]
    with connector_for("member_sheet", sheet_config(tmp_path / "*.xlsx")) as connector:
        step = connector.check()[0]
        with pytest.raises(FatalError, match="no file matches"):
            list(connector.read("members", None))
    assert not step.ok and "no file matches" in step.detail


def test_the_pipeline_stages_members_and_quarantines_the_row_without_an_id(tmp_path, database_url):
    write_csv(tmp_path / "会员.csv", "utf-8-sig")
    header = ", ".join(f"{k}: {v}" for k, v in HEADER.items())
    path = tmp_path / "memberhub.yaml"
    path.write_text(
        f"""
connectors:
  member_sheet:
    kind: spreadsheet
    path: {tmp_path / "*.csv"}
    header: {{{header}}}
    id_column: 会员卡号
""",
        encoding="utf-8",
    )
    hub = Hub(config_path=path, database_url=database_url)
    assert hub.writeback_names == []
    first = hub.sync("member_sheet")
    assert (first["pulled"], first["new"], first["quarantined"]) == (4, 3, 1)
    again = hub.sync("member_sheet")  # re-read whole: nothing new, nothing changed
    assert (again["new"], again["changed"], again["unchanged"]) == (0, 0, 3)
    counts = hub.stage()
    assert (counts["members"], counts["quarantined"]) == (3, 0)
    with hub.session() as session:
        staged = {m.source_id: m for m in session.scalars(select(StagedMember))}
        held = session.scalars(select(QuarantineRow)).all()
        stored = session.scalars(select(SourceRecordRow)).all()
    assert set(staged) == {"VIP0001", "VIP0002", "VIP0004"}
    assert (staged["VIP0001"].channel, staged["VIP0001"].phone, staged["VIP0001"].gender) == (
        "spreadsheet",
        "+8613800138000",
        "female",
    )
    assert str(staged["VIP0002"].birthday) == "1985-12-24"
    assert {r.payload["_row"] for r in stored} == {2, 3, 6}
    # the row without a card number is kept, once, with where to find it in the file
    assert len(held) == 1
    assert (held[0].source, held[0].stream, held[0].field) == ("member_sheet", "members", "card_no")
    assert "card_no" in held[0].reason
    assert (held[0].payload["_file"], held[0].payload["_row"], held[0].payload["name"]) == ("会员.csv", 4, "无卡号")


def test_write_back_is_refused(tmp_path):
    connector = connector_for("member_sheet", sheet_config(tmp_path / "x.csv"))
    with pytest.raises(FatalError, match="read only"):
        connector.push([])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    kind: spreadsheet\n    id_column: card_no\n", "kind spreadsheet needs `path`"),
        ("    kind: spreadsheet\n    path: a.csv\n", "kind spreadsheet needs `id_column`"),
        (
            "    kind: spreadsheet\n    path: a.csv\n    id_column: x\n    encoding: big-5x\n",
            "unknown encoding 'big-5x'",
        ),
        (
            "    kind: spreadsheet\n    path: a.csv\n    id_column: x\n    url: sqlite://\n",
            "`url` is a setting of kind sql, not spreadsheet",
        ),
        (
            "    kind: shopify\n    base_url: http://x\n    header: {a: b}\n",
            "`header` is a setting of kind spreadsheet, not shopify",
        ),
        ("    kind: spreadsheat\n    path: a.csv\n", "did you mean 'spreadsheet'?"),
    ],
)
def test_spreadsheet_settings_are_checked(tmp_path, body, expected):
    path = tmp_path / "memberhub.yaml"
    path.write_text(f"connectors:\n  member_sheet:\n{body}", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)
