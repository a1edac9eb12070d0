package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/wsgateway/wsgateway/internal/auth"
)

// chunkReader hands out body in chunks of at most n bytes, then err (io.EOF: a whole body).
type chunkReader struct {
	body []byte
	n    int
	err  error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.body) == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n, len(r.body))
	copy(p, r.body[:k])
	r.body = r.body[k:]
	return k, nil
}

type decodeOutcome struct {
	ok     bool
	status int
	req    pushRequest
}

func runDecode(body io.Reader, streaming bool) decodeOutcome {
	gin.SetMode(gin.ReleaseMode)
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(http.MethodPost, "/api/v1/push", body)
	a := &api{}
	var out decodeOutcome
	if streaming {
		// What decode was before the pooled buffer: the json.Decoder on the request body.
		out.ok = a.decodeStream(c, http.MaxBytesReader(c.Writer, c.Request.Body, MaxBody), &out.req)
	} else {
		out.ok = a.decode(c, &out.req)
	}
	out.status = w.Code
	if !out.ok {
		var e struct{ Error string }
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
			out.status = -1 // not an {"error": …} answer
		}
	}
	return out
}

// errs are the ways reading a body fails: over the limit, too slow, cut off.
var errs = []error{io.EOF, &http.MaxBytesError{Limit: MaxBody}, os.ErrDeadlineExceeded, io.ErrUnexpectedEOF}

// decode (whole body, json.Unmarshal) accepts, refuses and decodes exactly as the streaming
// json.Decoder did, including when reading stops early with an error after any prefix.
func FuzzDecodeMatchesStream(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"alice","data":{"text":"hi"}}`,
		`{"user_ids":["alice","bob"],"data":[1,2,3]}`,
		`{"USER_ID":"alice","Data":  [ 1 , 2 ] }`,
		`{"uſer_id":"alice","data":1}`,
		`{"user_id":"alice","data":1,"data":2}`,
		`{"user_ids":["a"],"user_ids":null,"data":1}`,
		`{"user_ids":["a",null],"data":1}`,
		`{"user_id":7,"data":1}`,
		`{"user_id":"alice","data":1} {"x":1}`,
		`{"user_id":"alice","data":1}garbage`,
		`{"user_id":"alice","data":"\xff\xfe"}`,
		`{"user_id":"al\u0069ce","data":1} ` + "\r\n\t",
		`[1,2]`, `null`, ``, `{`, `"x"`, `123`, `hello`, ` {} `,
	} {
		for i := range errs {
			f.Add([]byte(s), uint8(i), uint16(len(s)), uint8(7))
			f.Add([]byte(s), uint8(i), uint16(len(s)/2), uint8(1))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, errKind uint8, cut uint16, chunk uint8) {
		err := errs[int(errKind)%len(errs)]
		if err != io.EOF {
			body = body[:min(int(cut), len(body))] // what arrived before the error
		}
		n := max(int(chunk), 1)
		old := runDecode(&chunkReader{body: body, n: n, err: err}, true)
		got := runDecode(&chunkReader{body: body, n: n, err: err}, false)
		// What a refused body decoded to is never used: only the answer counts then.
		if old.ok != got.ok || old.status != got.status || (old.ok && !reflect.DeepEqual(old.req, got.req)) {
			t.Fatalf("body %q then %v:\nstreaming %+v\nnow       %+v", body, err, old, got)
		}
	})
}

// The hand-built answer is byte for byte what c.JSON(200, gin.H{"results": …}) sent.
func TestWriteResultsMatchesJSON(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ABCXYZabcxyz0189_.:@-"
	// The shape json.Marshal gives each case of a result.
	type jsonResult struct {
		UserID    string `json:"user_id"`
		Error     string `json:"error,omitempty"`
		Seq       int64  `json:"seq,omitempty"`
		Online    *bool  `json:"online,omitempty"`
		Queued    *bool  `json:"queued,omitempty"`
		Duplicate bool   `json:"duplicate,omitempty"`
	}
	yes, no := true, false
	for _, n := range []int{1, 2, 3, 100, MaxUsers} {
		users := make([]string, n)
		results := make([]PushResult, n)
		res := make([]jsonResult, n)
		for i := range users {
			var b strings.Builder
			for range 1 + rng.IntN(128) {
				b.WriteByte(alphabet[rng.IntN(len(alphabet))])
			}
			users[i] = b.String()
			if !auth.ValidUserID(users[i]) {
				t.Fatalf("test bug: %q", users[i])
			}
			seq := 1 + rng.Int64N(1<<40)
			switch rng.IntN(4) {
			case 0:
				results[i] = PushResult{Seq: seq, Online: true}
				res[i] = jsonResult{UserID: users[i], Seq: seq, Online: &yes, Queued: &no}
			case 1:
				results[i] = PushResult{Seq: seq}
				res[i] = jsonResult{UserID: users[i], Seq: seq, Online: &no, Queued: &yes}
			case 2:
				results[i] = PushResult{Seq: seq, Duplicate: true}
				res[i] = jsonResult{UserID: users[i], Seq: seq, Online: &no, Queued: &no, Duplicate: true}
			default:
				results[i] = PushResult{Err: errors.New("boom")}
				res[i] = jsonResult{UserID: users[i], Error: "redis unavailable, not accepted"}
			}
		}
		want := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(want)
		c.JSON(http.StatusOK, gin.H{"results": res})
		got := httptest.NewRecorder()
		c, _ = gin.CreateTestContext(got)
		msgs := make([]Message, len(users))
		for i, u := range users {
			msgs[i].User = u
		}
		writeResults(c, msgs, results)
		if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) ||
			!reflect.DeepEqual(got.Header(), want.Header()) {
			t.Fatalf("%d users: got %d %v %.300s\nwant %d %v %.300s", n,
				got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	}
}

// Every byte a valid user id may hold is written as itself by json.Marshal: the claim that
// lets writeResults skip escaping.
func TestUserIDBytesNeedNoEscaping(t *testing.T) {
	for c := range 256 {
		s := string(rune(c))
		if c >= 0x80 {
			s = string([]byte{byte(c)})
		}
		if !auth.ValidUserID(s) {
			continue
		}
		b, _ := json.Marshal(s)
		if string(b) != `"`+s+`"` {
			t.Errorf("byte %#x is a valid user id but JSON-encodes as %s", c, b)
		}
	}
}
