package auth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		target string // request URI
		auth   []string
		want   string
	}{
		{name: "nothing", target: "/ws", want: ""},
		{name: "query", target: "/ws?token=q.q.q", want: "q.q.q"},
		{name: "header", target: "/ws", auth: []string{"Bearer h.h.h"}, want: "h.h.h"},
		{name: "query wins over header", target: "/ws?token=q.q.q", auth: []string{"Bearer h.h.h"}, want: "q.q.q"},
		{name: "empty query falls back to header", target: "/ws?token=", auth: []string{"Bearer h.h.h"}, want: "h.h.h"},
		{name: "other query parameters ignored", target: "/ws?user_id=alice&tok=x", auth: []string{"Bearer h.h.h"}, want: "h.h.h"},
		{name: "first of several query values", target: "/ws?token=a&token=b", want: "a"},
		{name: "query unescaped", target: "/ws?token=a%2Eb%2Ec", want: "a.b.c"},
		{name: "scheme lower case", target: "/ws", auth: []string{"bearer h"}, want: "h"},
		{name: "scheme upper case", target: "/ws", auth: []string{"BEARER h"}, want: "h"},
		{name: "several spaces and a tab", target: "/ws", auth: []string{"Bearer  \th  "}, want: "h"},
		{name: "other scheme", target: "/ws", auth: []string{"Basic dXNlcjpwYXNz"}, want: ""},
		{name: "scheme only", target: "/ws", auth: []string{"Bearer"}, want: ""},
		{name: "scheme and spaces only", target: "/ws", auth: []string{"Bearer   "}, want: ""},
		{name: "no space after scheme", target: "/ws", auth: []string{"Bearerh.h.h"}, want: ""},
		{name: "bare token without scheme", target: "/ws", auth: []string{"h.h.h"}, want: ""},
		{name: "first Authorization header", target: "/ws", auth: []string{"Bearer one", "Bearer two"}, want: "one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			for _, a := range tt.auth {
				r.Header.Add("Authorization", a)
			}
			if got := TokenFromRequest(r); got != tt.want {
				t.Fatalf("TokenFromRequest = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestTokenFromRequestIncomplete(t *testing.T) {
	tests := []struct {
		name string
		r    *http.Request
		want string
	}{
		{name: "nil request", r: nil, want: ""},
		{name: "no URL, no header", r: &http.Request{}, want: ""},
		{name: "no URL", r: &http.Request{Header: http.Header{"Authorization": {"Bearer h"}}}, want: "h"},
		{name: "bad query", r: &http.Request{URL: &url.URL{RawQuery: "token=%zz"}}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TokenFromRequest(tt.r); got != tt.want {
				t.Fatalf("TokenFromRequest = %q; want %q", got, tt.want)
			}
		})
	}
}

func FuzzTokenFromRequest(f *testing.F) {
	f.Add("token=a.b.c", "Bearer x.y.z")
	f.Add("", "bearer   x.y.z ")
	f.Add("token=", "Bearer\tx")
	f.Add("token=%zz;token=a", "Basic x")
	f.Add("", "Bearer")
	f.Add("", "Bearerx")
	f.Fuzz(func(t *testing.T, rawQuery, authorization string) {
		r := &http.Request{
			URL:    &url.URL{RawQuery: rawQuery},
			Header: http.Header{"Authorization": {authorization}},
		}
		got := TokenFromRequest(r)
		if q := r.URL.Query().Get("token"); q != "" {
			if got != q {
				t.Fatalf("TokenFromRequest = %q; want the query value %q", got, q)
			}
			return
		}
		if got == "" {
			return
		}
		// From the header: "Bearer" in any case, then whitespace, then got
		// with nothing but whitespace after it.
		const scheme = "bearer"
		if len(authorization) <= len(scheme) ||
			strings.ToLower(authorization[:len(scheme)]) != scheme ||
			!strings.ContainsAny(authorization[len(scheme):len(scheme)+1], " \t") ||
			strings.Trim(got, " \t") != got ||
			strings.Trim(authorization[len(scheme):], " \t") != got {
			t.Fatalf("TokenFromRequest = %q from header %q", got, authorization)
		}
	})
}
