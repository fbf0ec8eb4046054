<#
.SYNOPSIS
  Runs one m365guard command for Windows Task Scheduler and hands back its exit code.
.DESCRIPTION
  Task Scheduler shows this script's exit code as "Last Run Result" (0x0 clean, 0x3 new
  high-severity findings, 0x4 partial run, 0x5 another run still going; jobs\README.md has the
  whole table). Works the same under Windows PowerShell 5.1 and PowerShell 7:

  - no $ErrorActionPreference = "Stop" around the native call: under 5.1 the first line
    m365guard writes to stderr would stop the script and the scheduler would see 0x1;
  - the code is m365guard's own, read from $LASTEXITCODE right after the call;
  - its output (stdout and stderr, UTF-8) is appended to LogDir\<command>.log, then a line
    "<start time> <command> exit <code>".

  The certificate password is read from -CertPasswordFile, a file only the task's account (and
  SYSTEM / Administrators) can read; the script refuses a file others can read. The password is
  given to m365guard in its environment for this run only: never on a command line, never logged.
.EXAMPLE
  run-m365guard.ps1 -Command nightly
.EXAMPLE
  run-m365guard.ps1 -Command doctor     # before scheduling: the same account, password and log
#>
param(
    [Parameter(Mandatory = $true)][ValidateSet("nightly", "weekly", "doctor")][string]$Command,
    [string]$InstallDir = "C:\Program Files\m365guard",
    [string]$Config = "C:\ProgramData\m365guard\policies.toml",
    [string]$LogDir = "C:\ProgramData\m365guard\logs",
    [string]$CertPasswordFile = "C:\ProgramData\m365guard\secrets\cert-password.txt",
    [string]$Exe = ""
)
# Never "Stop" here (see above); PowerShell 7.3+ must not turn a non-zero exit into an error.
$ErrorActionPreference = "Continue"
$PSNativeCommandUseErrorActionPreference = $false
$ConfigError = 6   # m365guard's exit code for an unusable setting (jobs\README.md)
if (-not $Exe) { $Exe = Join-Path $InstallDir "venv\Scripts\m365guard.exe" }

New-Item -ItemType Directory -Force -Path $LogDir | Out-Null
$log = Join-Path $LogDir "$Command.log"
$utf8 = New-Object System.Text.UTF8Encoding($false)
function Write-Log([string]$Text) {
    [System.IO.File]::AppendAllText($log, $Text + "`r`n", $utf8)
}
$started = Get-Date -Format o

if (Test-Path -LiteralPath $CertPasswordFile -PathType Leaf) {
    $me = [System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value
    $trusted = @($me, "S-1-5-18", "S-1-5-32-544")   # the task's account, SYSTEM, Administrators
    $readers = (Get-Acl -LiteralPath $CertPasswordFile).Access | Where-Object {
        $_.AccessControlType -eq "Allow" -and
        ($_.FileSystemRights -band [System.Security.AccessControl.FileSystemRights]::ReadData)
    } | ForEach-Object {
        try { $_.IdentityReference.Translate([System.Security.Principal.SecurityIdentifier]).Value }
        catch { $_.IdentityReference.Value }
    } | Where-Object { $trusted -notcontains $_ }
    if ($readers) {
        Write-Log "$started $Command error: $CertPasswordFile can be read by others ($($readers -join ', ')); allow only the task's account (icacls `"$CertPasswordFile`" /inheritance:r /grant:r `"$env:USERNAME`:R`")"
        Write-Log "$started $Command exit $ConfigError"
        exit $ConfigError
    }
    # First line only; a BOM or CRLF from Notepad is not part of the password.
    $env:M365GUARD_CERT_PASSWORD = ([System.IO.File]::ReadAllLines($CertPasswordFile)[0]).Trim([char]0xFEFF, " ", "`t")
}

# m365guard writes UTF-8; decode it as such whatever the console code page.
[Console]::OutputEncoding = $utf8
$env:PYTHONIOENCODING = "utf-8"
& $Exe $Command --config $Config 2>&1 | ForEach-Object { Write-Log "$_" }
$code = $LASTEXITCODE
if ($null -eq $code) { $code = 1 }   # the program could not be started at all
Remove-Item Env:\M365GUARD_CERT_PASSWORD -ErrorAction SilentlyContinue
Write-Log "$started $Command exit $code"
exit $code
