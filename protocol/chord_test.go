package protocol

import "testing"

// A part recorded by Go must be the member Python's json.dumps writes for
// the same result, or a part rerun on the other language counts twice.
func TestPyJSONSpacing(t *testing.T) {
	for in, want := range map[string]string{
		`[1,"id","SUCCESS",{"a":[1,2.5,null],"b":"x, y: é"}]`:                                              `[1, "id", "SUCCESS", {"a": [1, 2.5, null], "b": "x, y: \u00e9"}]`,
		`[1,"id","FAILURE",{"exc_type":"ValueError","exc_message":["q\"u,o:te"],"exc_module":"builtins"}]`: `[1, "id", "FAILURE", {"exc_type": "ValueError", "exc_message": ["q\"u,o:te"], "exc_module": "builtins"}]`,
		`["😀"]`:       `["\ud83d\ude00"]`,
		`{ "a" : 1 }`: `{"a": 1}`,
	} {
		if got := string(pyJSONSpacing([]byte(in))); got != want {
			t.Errorf("pyJSONSpacing(%s) = %s; want %s", in, got, want)
		}
	}
}
