package server

import (
	"errors"
	"net/http"

	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/ws"
)

// clientAuth authenticates /ws: a JWT in ?token= or Authorization, or with --dev a ?user_id=.
type clientAuth struct {
	dev      bool
	verifier *auth.Verifier
}

func (a clientAuth) Authenticate(r *http.Request) (ws.Identity, error) {
	tok := auth.TokenFromRequest(r)
	if tok == "" && a.dev {
		user := r.URL.Query().Get("user_id")
		if !auth.ValidUserID(user) {
			return ws.Identity{}, errors.New("user_id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -")
		}
		return ws.Identity{User: user}, nil
	}
	if tok == "" {
		return ws.Identity{}, errors.New("token required")
	}
	return a.Refresh(tok)
}

// Refresh verifies a token (at connect, and sent in-band with "auth <jwt>").
func (a clientAuth) Refresh(tok string) (ws.Identity, error) {
	if a.verifier == nil {
		return ws.Identity{}, errors.New("tokens are not configured on this node")
	}
	user, exp, err := a.verifier.VerifyExpiry(tok)
	if err != nil {
		return ws.Identity{}, err
	}
	return ws.Identity{User: user, Expires: exp}, nil
}
