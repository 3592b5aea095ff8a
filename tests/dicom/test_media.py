from __future__ import annotations

import pytest

from app.dicom.media import (
    DEFAULT_TRANSFER_SYNTAX,
    MediaRange,
    MediaType,
    MediaTypes,
    multipart_related,
    negotiate,
    parse_accept,
    parse_content_type,
)
from app.errors import BadRequest, NotAcceptable

JSON_OFFERS = [MediaType("application", "dicom+json"), MediaType("application", "json")]
DICOM = multipart_related(MediaTypes.DICOM)
OCTETS = multipart_related(MediaTypes.OCTET_STREAM)
JPEG = multipart_related("image/jpeg")


def choose(accept: str | None, offers: list[MediaType]) -> MediaType:
    return negotiate(parse_accept(accept), offers).offer


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        "Multipart/Related;TYPE=application/dicom ;transfer-syntax=1.2.840.10008.1.2.1",
    ],
)
def test_content_type_quoted_and_unquoted(value: str) -> None:
    media = parse_content_type(value)
    assert (media.type, media.subtype, media.essence) == ("multipart", "related", "multipart/related")
    assert media.params == {"type": "application/dicom", "transfer-syntax": "1.2.840.10008.1.2.1"}


def test_content_type_boundary_keeps_case_and_escapes() -> None:
    media = parse_content_type(r'multipart/related; boundary="Ab,c;d \"e\""; type=application/dicom')
    assert media.params["boundary"] == 'Ab,c;d "e"'
    assert parse_content_type(str(media)) == media


@pytest.mark.parametrize(
    "value",
    [
        "",
        "application",
        "application/",
        "*/*",
        "application/*",
        "a/b; c",
        'a/b; c="open',
        "a/b, c/d",
        "a/b; c=d e",
    ],
)
def test_content_type_malformed(value: str) -> None:
    with pytest.raises(BadRequest, match="Content-Type"):
        parse_content_type(value)


def test_str_round_trips() -> None:
    assert str(DICOM) == 'multipart/related; type="application/dicom"'
    assert str(MediaRange("application", "json", {}, 0.5)) == "application/json; q=0.5"


@pytest.mark.parametrize("value", [None, "", "  ", " , "])
def test_missing_accept_means_anything(value: str | None) -> None:
    assert [r.essence for r in parse_accept(value)] == ["*/*"]


def test_accept_ranges_in_order_with_q() -> None:
    ranges = parse_accept("application/json;q=0.5, application/dicom+json ,*/*;q=0")
    assert [(r.essence, r.q, r.position) for r in ranges] == [
        ("application/json", 0.5, 0),
        ("application/dicom+json", 1.0, 1),
        ("*/*", 0.0, 2),
    ]
    assert all("q" not in r.params for r in ranges)


def test_accept_comma_inside_quotes() -> None:
    ranges = parse_accept('multipart/related; type="application/dicom"; x="a, b", application/json')
    assert [r.essence for r in ranges] == ["multipart/related", "application/json"]
    assert ranges[0].params == {"type": "application/dicom", "x": "a, b"}


@pytest.mark.parametrize("q", ["abc", "2", "1.5", "-1", "0.1234", "", "1.001"])
def test_accept_invalid_q(q: str) -> None:
    with pytest.raises(BadRequest, match="Accept"):
        parse_accept(f"application/json;q={q}")


@pytest.mark.parametrize("value", ["application", "*/json", "application/json; =1", 'a/b; c="x'])
def test_accept_malformed(value: str) -> None:
    with pytest.raises(BadRequest, match="Accept"):
        parse_accept(value)


# -- negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/*", "application/dicom+json"),
        ("application/json", "application/json"),
        ("application/json, application/dicom+json", "application/json"),  # header order
        ("application/json;q=0.9, application/dicom+json", "application/dicom+json"),
        ("*/*, application/json", "application/json"),  # specific beats wildcard at equal q
        ("*/*;q=0.8, application/json;q=0.5", "application/dicom+json"),
        ("*/*, application/dicom+json;q=0", "application/json"),  # most specific q rules
        ("text/html, application/json;q=0.1", "application/json"),
    ],
)
def test_negotiate_json(accept: str | None, expected: str) -> None:
    assert choose(accept, JSON_OFFERS).essence == expected


@pytest.mark.parametrize(
    "accept", ["text/html", "application/json;q=0, application/dicom+json;q=0", "*/*;q=0", "image/*"]
)
def test_nothing_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="application/dicom\\+json"):
        negotiate(parse_accept(accept), JSON_OFFERS)


def test_no_offers() -> None:
    with pytest.raises(NotAcceptable):
        negotiate(parse_accept("*/*"), [])


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ('multipart/related; type="application/octet-stream"', OCTETS),
        ("multipart/related; type=image/jpeg", JPEG),
        ('multipart/related; type="IMAGE/JPEG"', JPEG),
        ("multipart/related", OCTETS),  # no type: the resource's default, the first offer
        ("multipart/*", OCTETS),
        ("multipart/*; type=image/jpeg", JPEG),
        (
            'multipart/related; type="application/octet-stream";q=0.5, multipart/related; type=image/jpeg',
            JPEG,
        ),
        ("*/*", OCTETS),
    ],
)
def test_negotiate_multipart_type(accept: str, expected: MediaType) -> None:
    assert choose(accept, [OCTETS, JPEG]) == expected


def test_type_parameter_must_match() -> None:
    with pytest.raises(NotAcceptable):
        negotiate(parse_accept('multipart/related; type="application/dicom"'), [OCTETS])
    with pytest.raises(NotAcceptable):
        negotiate(
            parse_accept('multipart/related; type="application/dicom"'), [MediaType("application", "json")]
        )


def test_range_without_type_matches_only_the_default() -> None:
    chosen = negotiate(
        parse_accept("multipart/related, multipart/related; type=image/jpeg;q=0.1"), [OCTETS, JPEG]
    )
    assert chosen.offer == OCTETS
    ranges = parse_accept("multipart/related;q=0.1, application/dicom+json")
    assert negotiate(ranges, [*JSON_OFFERS, OCTETS]).offer.essence == "application/dicom+json"


def test_transfer_syntax_extraction() -> None:
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50, '
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5, */*; q=0.1'
    )
    chosen = negotiate(parse_accept(accept), [DICOM])
    assert chosen.offer == DICOM
    assert chosen.transfer_syntax == "1.2.840.10008.1.2.4.50"
    assert chosen.params == {"type": "application/dicom", "transfer-syntax": "1.2.840.10008.1.2.4.50"}
    assert [r.position for r in chosen.alternatives] == [0, 1, 2]
    assert chosen.transfer_syntaxes(DEFAULT_TRANSFER_SYNTAX) == [
        "1.2.840.10008.1.2.4.50",
        "*",
        DEFAULT_TRANSFER_SYNTAX,
    ]


def test_transfer_syntax_wildcard_and_absent() -> None:
    star = negotiate(parse_accept('multipart/related; type="application/dicom"; transfer-syntax=*'), [DICOM])
    assert star.transfer_syntax == "*"
    plain = negotiate(parse_accept('multipart/related; type="application/dicom"'), [DICOM])
    assert plain.transfer_syntax is None
    assert plain.transfer_syntaxes(DEFAULT_TRANSFER_SYNTAX) == ["1.2.840.10008.1.2.1"]


def test_q_zero_ranges_are_not_alternatives() -> None:
    accept = 'multipart/related; type="application/dicom", */*;q=0'
    chosen = negotiate(parse_accept(accept), [DICOM])
    assert [r.essence for r in chosen.alternatives] == ["multipart/related"]


def test_ties_follow_offer_order() -> None:
    assert choose("*/*", [OCTETS, MediaType("application", "octet-stream")]) == OCTETS
    assert (
        choose("*/*", [MediaType("application", "octet-stream"), OCTETS]).essence
        == "application/octet-stream"
    )


def test_media_type_constants() -> None:
    assert [m.value for m in MediaTypes] == [
        "application/dicom",
        "application/dicom+json",
        "application/json",
        "application/octet-stream",
        "multipart/related",
    ]
    assert DEFAULT_TRANSFER_SYNTAX == "1.2.840.10008.1.2.1"


def test_a_wildcard_type_parameter_accepts_any_root_type():
    # dicomweb-client asks for bulk data with ``multipart/related; type="*/*"``.
    offers = [multipart_related("application/octet-stream"), MediaType("application", "octet-stream")]
    chosen = negotiate(parse_accept('multipart/related; type="*/*"'), offers)
    assert chosen.offer == offers[0]
    chosen = negotiate(parse_accept('multipart/related; type="application/*"'), offers)
    assert chosen.offer == offers[0]
    with pytest.raises(NotAcceptable):
        negotiate(parse_accept('multipart/related; type="image/*"'), offers[:1])
