package topology

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// LabName reads only the lab name of a topology file. Destroy, inspect and
// exec need no more, and must work even after the rest of the file was
// edited into something invalid.
func LabName(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read topology: %w", err)
	}
	var top struct {
		Name string `yaml:"name"`
	}
	if err := yaml.Unmarshal(data, &top); err != nil || top.Name == "" {
		return "", fmt.Errorf("%s: no lab `name:` found at the top of the file", path)
	}
	return top.Name, nil
}
