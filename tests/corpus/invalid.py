"""Invalid requests and the status each must be refused with (names start with their RFC section)."""

from __future__ import annotations

from polycorn.server.http.connection import Limits

from corpus import Invalid, head

H = b"Host: example.com"
TE = b"Transfer-Encoding: chunked"


def get(*fields: bytes) -> bytes:
    return head(b"GET / HTTP/1.1", H, *fields)


def line(request_line: bytes) -> bytes:
    return head(request_line, H)


def post_chunked(body: bytes, *fields: bytes) -> bytes:
    return head(b"POST /upload HTTP/1.1", H, TE, *fields) + body


def post_length(length: bytes, body: bytes = b"") -> bytes:
    return head(b"POST / HTTP/1.1", H, b"Content-Length: " + length) + body


def post_coding(*codings: bytes) -> bytes:
    fields = [b"Transfer-Encoding: " + coding for coding in codings]
    return head(b"POST / HTTP/1.1", H, *fields) + b"0\r\n\r\n"


FOLDING = Limits(permit_obsolete_folding=True)

CASES = [
    # --- RFC 9112 3 / 2.3: the request line and the version ------------------------------
    Invalid("rfc9112-3-garbage-line", b"hello\r\n\r\n", 400),
    Invalid("rfc9112-3-http09-simple-request-no-version", b"GET /\r\n\r\n", 400),
    # A request line is judged as soon as its CRLF arrives, not when the head ends: an
    # HTTP/0.9 client sends no more (it waits for the answer) and must not wait for --timeout.
    Invalid("rfc9112-3-http09-request-line-alone", b"GET /\r\n", 400),
    Invalid("rfc9112-3-bad-request-line-before-head-ends", b"GET / HTTP/1.1 x\r\nHost: a\r\n", 400),
    Invalid("rfc9112-2.3-http20-before-head-ends", b"GET / HTTP/2.0\r\nHost: a\r\n", 505),
    Invalid("rfc9112-2.2-request-line-bare-lf-before-head-ends", b"GET / HTTP/1.1\nHost: a\r\n",
            400),
    Invalid("rfc9112-3.2-bad-target-before-head-ends", b"GET ftp://a/ HTTP/1.1\r\n", 400),
    # The request line's verdict comes before the field limits, whole or split.
    Invalid("rfc9112-3-request-line-judged-before-field-count",
            head(b"GET / HTTP/1.1 x", *(b"X-F%d: %d" % (i, i) for i in range(101))), 400),
    Invalid("rfc9112-2.3-http09-version", head(b"GET / HTTP/0.9"), 505),
    Invalid("rfc9112-2.3-http20-version", line(b"GET / HTTP/2.0"), 505),
    # RFC 9110 2.5: HTTP/1.2 is read as HTTP/1.1, whose rules then apply (Host required).
    Invalid("rfc9110-2.5-http12-without-host", head(b"GET / HTTP/1.2"), 400),
    Invalid("rfc9112-2.3-http30-version", line(b"GET / HTTP/3.0"), 505),
    Invalid("rfc9112-2.3-h2-connection-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    Invalid("rfc9112-2.3-version-lowercase", line(b"GET / http/1.1"), 400),
    Invalid("rfc9112-2.3-version-two-digit-minor", line(b"GET / HTTP/1.10"), 400),
    Invalid("rfc9112-2.3-version-without-minor", line(b"GET / HTTP/1"), 400),
    Invalid("rfc9112-2.3-version-with-space", line(b"GET / HTTP/ 1.1"), 400),
    Invalid("rfc9112-3-empty-version", line(b"GET / "), 400),
    Invalid("rfc9112-3-double-space-after-method", line(b"GET  / HTTP/1.1"), 400),
    Invalid("rfc9112-3-double-space-before-version", line(b"GET /  HTTP/1.1"), 400),
    Invalid("rfc9112-3-trailing-space", line(b"GET / HTTP/1.1 "), 400),
    Invalid("rfc9112-3-leading-space", line(b" GET / HTTP/1.1"), 400),
    Invalid("rfc9112-3-tab-separators", line(b"GET\t/\tHTTP/1.1"), 400),
    Invalid("rfc9112-3-extra-word", line(b"GET / HTTP/1.1 extra"), 400),
    Invalid("rfc9112-3-method-missing", line(b"/ HTTP/1.1"), 400),
    Invalid("rfc9112-3-method-not-a-token", line(b"GE(T / HTTP/1.1"), 400),
    Invalid("rfc9112-3-method-with-obs-text", line(b"G\xc9T / HTTP/1.1"), 400),
    Invalid("rfc9112-3-nul-in-request-line", line(b"GET /\x00 HTTP/1.1"), 400),
    Invalid("rfc9112-3-target-with-space", line(b"GET /a b HTTP/1.1"), 400),
    Invalid("rfc9112-3-target-control-byte", line(b"GET /a\x01 HTTP/1.1"), 400),
    Invalid("rfc9112-3-target-del-byte", line(b"GET /a\x7f HTTP/1.1"), 400),
    Invalid("rfc9112-3-target-obs-text", line(b"GET /caf\xe9 HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.1-target-with-fragment", line(b"GET /a#b HTTP/1.1"), 400),
    Invalid("rfc9112-3.2-target-relative-path", line(b"GET a/b HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.2-absolute-form-with-fragment", line(b"GET http://a/b#c HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.2-absolute-form-not-hierarchical", line(b"GET http:example HTTP/1.1"), 400),
    # RFC 9112 3.2.2: absolute-form names an http or https resource; we are its origin server.
    Invalid("rfc9112-3.2.2-absolute-form-other-scheme-bad-authority", line(b"PUT s://]ufd/: HTTP/1.1"),
            400),
    Invalid("rfc9112-3.2.2-absolute-form-ftp-scheme", line(b"GET ftp://example.com/x HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.2-absolute-form-unclosed-ipv6", line(b"GET http://[bad/x HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.2-absolute-form-bracket-in-host", line(b"GET http://a]b/x HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.2-absolute-form-bad-port", line(b"GET http://example.com:8x/ HTTP/1.1"),
            400),
    Invalid("rfc9112-3.2.2-absolute-form-quote-in-host", line(b'GET http://a"b/ HTTP/1.1'), 400),
    # RFC 9110 4.2.1: an http URI with an empty host MUST be rejected as invalid.
    Invalid("rfc9110-4.2.1-absolute-form-empty-host", line(b"GET http:///x HTTP/1.1"), 400),
    Invalid("rfc9110-4.2.1-absolute-form-empty-host-with-port", line(b"GET http://:80/x HTTP/1.1"),
            400),
    # RFC 9110 4.2.4: userinfo in an http(s) target is to be treated as an error.
    Invalid("rfc9110-4.2.4-absolute-form-userinfo", line(b"GET http://user@example.com/ HTTP/1.1"),
            400),
    Invalid("rfc9112-3.2.3-authority-form-for-get", line(b"GET example.com:80 HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.3-connect-origin-form", line(b"CONNECT / HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.3-connect-without-port", line(b"CONNECT example.com HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.3-connect-empty-host", line(b"CONNECT :443 HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.3-connect-empty-port", line(b"CONNECT example.com: HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.3-connect-absolute-form", line(b"CONNECT http://a:80/ HTTP/1.1"), 400),
    Invalid("rfc9112-3.2.4-asterisk-for-get", line(b"GET * HTTP/1.1"), 400),
    Invalid("rfc9112-3-request-line-over-limit",
            line(b"GET /" + b"a" * (8191 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"), 414),
    Invalid("limits-request-line-custom-over", line(b"GET /abcdefg HTTP/1.1"), 414,
            limits=Limits(max_request_line=20)),
    Invalid("limits-request-line-never-ends", b"GET /" + b"a" * 10000, 414),
    Invalid("limits-request-line-checked-before-fields",
            head(b"GET /" + b"a" * 9000 + b" HTTP/1.1", b"X: " + b"b" * 9000), 414),
    # --- RFC 9112 2.2: line endings --------------------------------------------------------
    Invalid("rfc9112-2.2-bare-lf-everywhere", b"GET / HTTP/1.1\nHost: example.com\n\n", 400),
    Invalid("rfc9112-2.2-bare-lf-after-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    Invalid("rfc9112-2.2-bare-lf-in-field-section", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    Invalid("rfc9112-2.2-bare-lf-ends-head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    Invalid("rfc9112-2.2-lf-then-crlf-ends-head", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    Invalid("rfc9112-2.2-bare-cr-in-field-section", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    Invalid("rfc9112-2.2-bare-cr-line-endings", b"GET / HTTP/1.1\rHost: a\r\r\n\r\n", 400),
    Invalid("rfc9112-2.2-cr-in-value", get(b"X: a\rb"), 400),
    Invalid("rfc9112-2.2-leading-bare-lf", b"\n" + get(), 400),
    Invalid("rfc9112-2.2-too-many-leading-empty-lines", b"\r\n" * 9 + get(), 400),
    # --- RFC 9112 5 / RFC 9110 5: field lines ------------------------------------------------
    Invalid("rfc9112-5.1-space-before-colon-host", head(b"GET / HTTP/1.1", b"Host : a"), 400),
    Invalid("rfc9112-5.1-space-before-colon", get(b"X-A : b"), 400),
    Invalid("rfc9112-5.1-tab-before-colon", get(b"X-A\t: b"), 400),
    Invalid("rfc9112-5.1-space-before-colon-transfer-encoding",
            head(b"POST / HTTP/1.1", H, b"Transfer-Encoding : chunked") + b"0\r\n\r\n", 400),
    Invalid("rfc9112-5.2-obs-fold-space-rejected", get(b"X-F: a", b" b"), 400),
    Invalid("rfc9112-5.2-obs-fold-tab-rejected", get(b"X-F: a", b"\tb"), 400),
    Invalid("rfc9112-2.2-whitespace-before-first-field",
            head(b"GET / HTTP/1.1", b" X: a", H), 400),
    Invalid("rfc9112-2.2-whitespace-before-first-field-folding-permitted",
            head(b"GET / HTTP/1.1", b" X: a", H), 400, limits=FOLDING),
    Invalid("rfc9112-5.2-obs-fold-permitted-with-nul", get(b"X-F: a", b" b\x00"), 400,
            limits=FOLDING),
    Invalid("rfc9112-5-field-without-colon", get(b"X-No-Colon"), 400),
    Invalid("rfc9110-5.1-empty-field-name", get(b": value"), 400),
    Invalid("rfc9110-5.1-field-name-not-token", get(b"X(Y): a"), 400),
    Invalid("rfc9110-5.1-field-name-with-at", get(b"X@Y: a"), 400),
    Invalid("rfc9110-5.1-field-name-obs-text", get(b"X-\xe9: a"), 400),
    Invalid("rfc9110-5.5-nul-in-value", get(b"X: a\x00b"), 400),
    Invalid("rfc9110-5.5-control-byte-in-value", get(b"X: a\x01b"), 400),
    Invalid("rfc9110-5.5-escape-byte-in-value", get(b"X: a\x1bb"), 400),
    Invalid("rfc9110-5.5-del-in-value", get(b"X: a\x7fb"), 400),
    Invalid("rfc9112-5-header-count-over-limit",
            get(*(b"X-F%d: %d" % (i, i) for i in range(100))), 431),
    Invalid("limits-header-count-custom-over", get(b"A: 1", b"B: 2", b"C: 3"), 431,
            limits=Limits(max_header_count=3)),
    Invalid("rfc9112-5-header-size-over-limit", get(b"X-Big: " + b"v" * (8191 - 7)), 431),
    Invalid("limits-header-size-custom-over", get(b"X-Abc: 1234567890123456"), 431,
            limits=Limits(max_header_size=20)),
    Invalid("limits-header-never-ends", b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 20000, 431),
    Invalid("limits-header-lines-never-end", b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 200, 431),
    Invalid("limits-header-size-checked-before-syntax", get(b"X Bad: " + b"v" * 9000), 431),
    # --- RFC 9112 3.2 / RFC 9110 7.2: Host ---------------------------------------------------
    Invalid("rfc9112-3.2-http11-without-host", head(b"GET / HTTP/1.1"), 400),
    Invalid("rfc9112-3.2-http11-without-host-other-fields", head(b"GET / HTTP/1.1", b"X: y"), 400),
    Invalid("rfc9112-3.2-two-host-fields", get(b"Host: other.example"), 400),
    Invalid("rfc9112-3.2-two-host-fields-same-value", get(H), 400),
    Invalid("rfc9112-3.2-two-host-fields-http10", head(b"GET / HTTP/1.0", H, H), 400),
    # --- RFC 9110 5.3: singleton fields (Content-Type = media-type, one member) --------------
    # A repeat cannot be combined into a list: which one the app reads is anyone's guess.
    Invalid("rfc9110-5.3-two-content-type-fields",
            head(b"POST / HTTP/1.1", H, b"Content-Type: text/plain", b"Content-Type: text/html",
                 b"Content-Length: 0"), 400),
    Invalid("rfc9110-5.3-two-content-type-fields-same-value",
            get(b"Content-Type: text/plain", b"Content-Type: text/plain"), 400),
    Invalid("rfc9110-5.3-two-content-type-fields-http10",
            head(b"POST / HTTP/1.0", b"content-type: a/b", b"CONTENT-TYPE: a/b"), 400),
    Invalid("rfc9112-3.2-host-with-space", head(b"GET / HTTP/1.1", b"Host: a b"), 400),
    Invalid("rfc9112-3.2-host-with-slash", head(b"GET / HTTP/1.1", b"Host: a/b"), 400),
    Invalid("rfc9112-3.2-host-with-userinfo", head(b"GET / HTTP/1.1", b"Host: user@a"), 400),
    Invalid("rfc9112-3.2-host-bad-port", head(b"GET / HTTP/1.1", b"Host: a:8x"), 400),
    Invalid("rfc9112-3.2-host-unclosed-ipv6", head(b"GET / HTTP/1.1", b"Host: [::1"), 400),
    Invalid("rfc9112-3.2-host-bad-percent-escape", head(b"GET / HTTP/1.1", b"Host: a%zz"), 400),
    Invalid("rfc9112-3.2-host-invalid-in-http10", head(b"GET / HTTP/1.0", b"Host: a b"), 400),
    # --- RFC 9110 8.6 / RFC 9112 6.3: Content-Length ------------------------------------------
    Invalid("rfc9110-8.6-content-length-negative", post_length(b"-1"), 400),
    Invalid("rfc9110-8.6-content-length-plus-sign", post_length(b"+5", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-hex", post_length(b"0x5", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-inner-space", post_length(b"1 2"), 400),
    Invalid("rfc9110-8.6-content-length-decimal", post_length(b"5.0", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-empty", post_length(b""), 400),
    Invalid("rfc9110-8.6-content-length-letters", post_length(b"five", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-too-many-digits", post_length(b"1" * 19), 400),
    Invalid("rfc9110-8.6-content-length-equal-list", post_length(b"5, 5", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-different-list", post_length(b"5, 6", b"hello"), 400),
    Invalid("rfc9110-8.6-content-length-twice-equal",
            head(b"POST / HTTP/1.1", H, b"Content-Length: 5", b"Content-Length: 5") + b"hello",
            400),
    Invalid("rfc9110-8.6-content-length-twice-different",
            head(b"POST / HTTP/1.1", H, b"Content-Length: 5", b"Content-Length: 6") + b"hello",
            400),
    Invalid("rfc9112-6.3-transfer-encoding-and-content-length",
            head(b"POST / HTTP/1.1", H, TE, b"Content-Length: 5") + b"0\r\n\r\n", 400),
    Invalid("rfc9112-6.3-content-length-and-transfer-encoding",
            head(b"POST / HTTP/1.1", H, b"Content-Length: 5", TE) + b"0\r\n\r\n", 400),
    # --- RFC 9112 6.1 / 7: Transfer-Encoding -------------------------------------------------
    Invalid("rfc9112-6.1-transfer-encoding-in-http10",
            head(b"POST / HTTP/1.0", TE) + b"0\r\n\r\n", 400),
    Invalid("rfc9112-6.3-final-coding-gzip", post_coding(b"gzip"), 400),
    Invalid("rfc9112-6.3-chunked-then-gzip", post_coding(b"chunked, gzip"), 400),
    Invalid("rfc9112-6.3-final-coding-identity", post_coding(b"identity"), 400),
    Invalid("rfc9112-6.3-chunked-with-parameter", post_coding(b"chunked;q=1"), 400),
    Invalid("rfc9112-6.1-gzip-then-chunked-unsupported", post_coding(b"gzip, chunked"), 501),
    Invalid("rfc9112-6.1-unknown-coding-then-chunked", post_coding(b"x-custom, chunked"), 501),
    Invalid("rfc9112-6.1-codings-split-across-fields", post_coding(b"gzip", b"chunked"), 501),
    Invalid("rfc9112-7-chunked-twice", post_coding(b"chunked, chunked"), 400),
    Invalid("rfc9112-7-chunked-twice-in-two-fields", post_coding(b"chunked", b"chunked"), 400),
    Invalid("rfc9112-6.1-transfer-encoding-empty", post_coding(b""), 400),
    Invalid("rfc9112-6.1-transfer-encoding-only-commas", post_coding(b" , ,"), 400),
    Invalid("rfc9112-6.1-transfer-coding-not-a-token", post_coding(b"chun ked"), 400),
    Invalid("rfc9112-6.1-transfer-coding-with-quote", post_coding(b'"chunked"'), 400),
    # --- RFC 9112 7.1: chunked bodies ---------------------------------------------------------
    Invalid("rfc9112-7.1-chunk-size-not-hex", post_chunked(b"g\r\nabc\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-negative", post_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-0x-prefix", post_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-leading-space", post_chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-trailing-space", post_chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-empty", post_chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-size-too-many-digits",
            post_chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("limits-chunk-size-digits-custom", post_chunked(b"005\r\nhello\r\n0\r\n\r\n"), 400,
            limits=Limits(max_chunk_size_digits=2)),
    Invalid("rfc9112-7.1-chunk-size-line-never-ends", post_chunked(b"5" * 6000), 400),
    Invalid("rfc9112-7.1-chunk-size-bare-lf", post_chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-last-chunk-bare-lf", post_chunked(b"5\r\nhello\r\n0\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-data-without-crlf", post_chunked(b"5\r\nhelloX0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-data-longer-than-size", post_chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-data-bare-lf-after", post_chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1-chunk-data-cr-without-lf", post_chunked(b"5\r\nhello\rX0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-empty-name", post_chunked(b"5;=x\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-space-in-value",
            post_chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-unterminated-quote",
            post_chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-bare-lf-smuggling",
            post_chunked(b"5;a\nb\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-control-byte",
            post_chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.1-chunk-ext-over-limit",
            post_chunked(b"5;" + b"e" * 4096 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    Invalid("limits-chunk-ext-custom-over", post_chunked(b"5;abcd=e\r\nhello\r\n0\r\n\r\n"), 400,
            limits=Limits(max_chunk_ext_size=4)),
    Invalid("rfc9112-7.1.2-trailer-space-before-colon",
            post_chunked(b"0\r\nX-T : t\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.2-trailer-obs-fold", post_chunked(b"0\r\nX-T: t\r\n folded\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.2-trailer-without-colon", post_chunked(b"0\r\nX-T\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.2-trailer-bare-lf", post_chunked(b"0\r\nX-T: t\n\r\n"), 400),
    Invalid("rfc9112-7.1.2-trailer-nul", post_chunked(b"0\r\nX-T: \x00\r\n\r\n"), 400),
    Invalid("rfc9112-7.1.2-trailer-over-size-limit",
            post_chunked(b"0\r\nX-T: " + b"t" * 8200 + b"\r\n\r\n"), 431),
    Invalid("rfc9112-7.1.2-too-many-trailers",
            post_chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), 431,
            limits=Limits(max_header_count=2)),
    # --- RFC 9112 6.3 / 8: a body cut short by EOF ------------------------------------------
    Invalid("rfc9112-8-content-length-body-cut-short", post_length(b"10", b"hello"), 400, eof=True),
    Invalid("rfc9112-8-content-length-body-missing", post_length(b"5"), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-before-first-chunk", post_chunked(b""), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-in-size-line", post_chunked(b"5"), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-in-chunk-data", post_chunked(b"5\r\nhel"), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-before-data-crlf", post_chunked(b"5\r\nhello"), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-before-last-chunk", post_chunked(b"5\r\nhello\r\n"), 400,
            eof=True),
    Invalid("rfc9112-8-chunked-eof-before-final-crlf", post_chunked(b"0\r\n"), 400, eof=True),
    Invalid("rfc9112-8-chunked-eof-in-trailers", post_chunked(b"0\r\nX-T: t\r\n"), 400, eof=True),
    Invalid("rfc9112-8-eof-in-request-line", b"GET / HT", 400, eof=True),
    Invalid("rfc9112-8-eof-in-field-section", b"GET / HTTP/1.1\r\nHost: a\r\n", 400, eof=True),
    Invalid("rfc9112-8-eof-after-stray-cr", b"\r", 400, eof=True),
    # --- RFC 9110 10.1.1: Expect ----------------------------------------------------------
    Invalid("rfc9110-10.1.1-expect-unknown", get(b"Expect: something"), 417),
    Invalid("rfc9110-10.1.1-expect-100-continue-and-unknown",
            get(b"Expect: 100-continue, something"), 417),
    Invalid("rfc9110-10.1.1-expect-102-processing", get(b"Expect: 102-processing"), 417),
    Invalid("rfc9110-10.1.1-expect-with-parameter", get(b"Expect: 100-continue;a=b"), 417),
    Invalid("rfc9110-10.1.1-expect-in-second-field",
            get(b"Expect: 100-continue", b"Expect: other"), 417),
]
