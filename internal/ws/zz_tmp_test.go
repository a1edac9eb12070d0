package ws_test
import "testing"
func TestZZModel(t *testing.T) {
	for i, s := range fzFrameSeeds() { t.Logf("%d %+v", i, fzModel(s)) }
}
