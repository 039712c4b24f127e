from imgtool.cli import console

console()
