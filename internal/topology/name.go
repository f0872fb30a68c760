package topology

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LabName reads only the lab name of a topology file. Destroy, inspect and
// exec need no more, and must work even after the rest of the file was
// edited into something invalid.
func LabName(path string) (string, error) {
	data, err := readFile(path)
	if err != nil {
		return "", err
	}
	name := labName(data)
	if name == "" {
		return "", fmt.Errorf("%s: no lab `name:` found at the top of the file", path)
	}
	// The name is joined into namespace names and the lab directory's path:
	// refuse what Parse refuses rather than act on some other lab or path.
	if msg := nameProblem("lab name", name); msg != "" {
		return "", fmt.Errorf("%s: %s", path, msg)
	}
	return name, nil
}

func labName(data []byte) string {
	var top struct {
		Name string `yaml:"name"`
	}
	// Too deep a file would keep yaml.v3 busy for minutes (see MaxDepth).
	if checkDepth("", data) == nil {
		if err := yaml.Unmarshal(data, &top); err == nil {
			return top.Name
		}
	}
	// A syntax error anywhere fails the whole document; the top-level
	// `name:` line alone still says which lab the file deployed.
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "name:") {
			if yaml.Unmarshal([]byte(line), &top) == nil {
				return top.Name
			}
			return ""
		}
	}
	return ""
}
