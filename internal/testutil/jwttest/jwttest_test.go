package jwttest

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func parse(t *testing.T, token string, m jwt.SigningMethod, key any) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, c, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{m.Alg()}), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("parse %s token: %v", m.Alg(), err)
	}
	return c
}

func TestHS256(t *testing.T) {
	const secret = "jwttest-secret-of-at-least-32-bytes!!"
	c := parse(t, HS256(t, secret, "alice"), jwt.SigningMethodHS256, []byte(secret))
	if c["sub"] != "alice" {
		t.Fatalf("sub = %v; want alice", c["sub"])
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp.Before(time.Now().Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("exp = %v (%v); want an hour from now", exp, err)
	}
}

func TestRSA(t *testing.T) {
	k := NewRSA(t)
	file, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, k.PEM) || !bytes.Equal(PublicPEM(t, &k.Private.PublicKey), k.PEM) {
		t.Fatal("the PEM file, PEM and PublicPEM disagree")
	}
	pub, err := jwt.ParseRSAPublicKeyFromPEM(k.PEM)
	if err != nil {
		t.Fatal(err)
	}
	tok := Sign(t, jwt.SigningMethodRS256, k.Private, Claims("bob"))
	if c := parse(t, tok, jwt.SigningMethodRS256, pub); c["sub"] != "bob" {
		t.Fatalf("sub = %v; want bob", c["sub"])
	}
}

func TestEC(t *testing.T) {
	k := NewEC(t)
	tok := Sign(t, jwt.SigningMethodES256, k, Claims("carol"))
	if c := parse(t, tok, jwt.SigningMethodES256, &k.PublicKey); c["sub"] != "carol" {
		t.Fatalf("sub = %v; want carol", c["sub"])
	}
}
