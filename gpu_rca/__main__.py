from gpu_rca.cli import main

main()
