package protocol

import "morag-gpu/internal/pyfmt"

// PyStrRepr is Python 3's repr(str), for the exception reprs Python peers
// show ("KeyError('foo')", "NotRegistered('x')").
func PyStrRepr(s string) string { return pyfmt.StrRepr(s) }
