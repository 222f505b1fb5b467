package main

import "os"

// envOr returns the environment variable's value, or fallback if it is
// unset or empty.
func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
