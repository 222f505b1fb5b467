package main

import "github.com/spf13/cobra"

func newDemoCommand() *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "Run the demo (not built yet)", Hidden: true}
}
