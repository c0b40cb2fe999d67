# Measure-Bandwidth: measures unbuffered sequential throughput at a destination the way a storage
# migration copies: writes SizeMiB MiB of random data in 1 MiB blocks to a new, uniquely named
# test file (FILE_FLAG_NO_BUFFERING 0x20000000 + WriteThrough, so neither the cache nor lazy
# writes flatter the number), reads it back unbuffered, and removes the file in every case.
# The file goes into DestinationPath, or into its nearest existing parent when the folder does not
# exist yet, so no folder is left behind. It refuses to run when less than the test size plus
# 1 GiB is free there.
# Prints one BandwidthProbe document (rates in MB/s, 10^6 bytes per second).
param([string]$DestinationPath, [int]$SizeMiB = 256)
$ErrorActionPreference = 'Stop'

if (-not ('HvMove.NativeVolume' -as [type])) {
    Add-Type -Namespace HvMove -Name NativeVolume -MemberDefinition @'
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumePathNameW(string lpszFileName, System.Text.StringBuilder lpszVolumePathName, uint cchBufferLength);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetDiskFreeSpaceExW(string lpDirectoryName, out ulong lpFreeBytesAvailable, out ulong lpTotalNumberOfBytes, out ulong lpTotalNumberOfFreeBytes);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumeInformationW(string lpRootPathName, System.Text.StringBuilder lpVolumeNameBuffer, uint nVolumeNameSize, out uint lpVolumeSerialNumber, out uint lpMaximumComponentLength, out uint lpFileSystemFlags, System.Text.StringBuilder lpFileSystemNameBuffer, uint nFileSystemNameSize);
'@
}

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
}

# Test-Path writes an error when access is denied or the path is too long (PowerShell's
# FileSystemProvider.ItemExists: ItemExistsUnauthorizedAccessError, ItemExistsPathTooLongError)
# and then says False; with $ErrorActionPreference = 'Stop' that error ends the script. So every
# existence test has three answers: 'exists', 'absent', or 'unreachable: <why>'.
function Get-HvmPathState([string]$path) {
    $problems = $null
    $found = Test-Path -LiteralPath $path -ErrorAction SilentlyContinue -ErrorVariable problems
    if ($problems -and @($problems).Count -gt 0) { return 'unreachable: ' + [string]@($problems)[0].Exception.Message }
    if ($found) { return 'exists' }
    return 'absent'
}

# The path itself when it exists, else its nearest existing parent, else $null.
function Get-HvmExistingAncestor([string]$path) {
    $p = $path
    for ($i = 0; $i -lt 256 -and $p; $i++) {
        $state = Get-HvmPathState $p
        if ($state -eq 'exists') { return $p }
        if ($state -ne 'absent') { throw "Path '$path' cannot be reached from this host: $state" }
        $parent = [System.IO.Path]::GetDirectoryName($p)
        if (-not $parent -or $parent -eq $p) { return $null }
        $p = $parent
    }
    return $null
}

if (-not (Test-HvmAbsolutePath $DestinationPath)) {
    throw "DestinationPath '$DestinationPath' is not an absolute path"
}
if ($SizeMiB -lt 1 -or $SizeMiB -gt 16384) {
    throw "SizeMiB must be between 1 and 16384 (got $SizeMiB)"
}
$folder = Get-HvmExistingAncestor $DestinationPath
if (-not $folder) {
    throw "DestinationPath '$DestinationPath' is not on a volume or share this host can reach"
}
if (-not (Test-Path -LiteralPath $folder -PathType Container)) {
    $folder = [System.IO.Path]::GetDirectoryName($folder)
}

$block = 1048576
$bytes = [int64]$SizeMiB * $block

$directory = $folder
if (-not $directory.EndsWith('\')) { $directory += '\' }
$available = [uint64]0
$total = [uint64]0
$totalFree = [uint64]0
if ([HvMove.NativeVolume]::GetDiskFreeSpaceExW($directory, [ref]$available, [ref]$total, [ref]$totalFree)) {
    if ([double]$available -lt [double]($bytes + 1073741824)) {
        throw "Only $available bytes are free at '$folder'; a $SizeMiB MiB probe needs its size plus 1 GiB"
    }
} else {
    Write-Warning -Message "Free space at '$folder' could not be read; probing anyway"
}

$file = [System.IO.Path]::Combine($folder, 'hvmove-probe-' + [guid]::NewGuid().ToString('N') + '.tmp')
$buffer = New-Object -TypeName 'byte[]' -ArgumentList $block
[System.Random]::new().NextBytes($buffer)

$noBuffering = [System.IO.FileOptions]0x20000000
$writeOptions = [System.IO.FileOptions]([System.IO.FileOptions]::WriteThrough -bor $noBuffering)
$written = [int64]0
$read = [int64]0
$watch = [System.Diagnostics.Stopwatch]::new()
try {
    $watch.Start()
    $stream = [System.IO.FileStream]::new($file, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None, 4096, $writeOptions)
    try {
        while ($written -lt $bytes) {
            $stream.Write($buffer, 0, $block)
            $written += $block
        }
    } finally {
        $stream.Dispose()
    }
    $watch.Stop()
    $writeSeconds = $watch.Elapsed.TotalSeconds

    $watch.Reset()
    $watch.Start()
    $stream = [System.IO.FileStream]::new($file, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::None, 4096, $noBuffering)
    try {
        while ($read -lt $bytes) {
            $n = $stream.Read($buffer, 0, $block)
            if ($n -le 0) { break }
            $read += $n
        }
    } finally {
        $stream.Dispose()
    }
    $watch.Stop()
    $readSeconds = $watch.Elapsed.TotalSeconds
} finally {
    try {
        [System.IO.File]::Delete($file)
    } catch {
        Write-Warning -Message "The probe file '$file' could not be removed: $($_.Exception.Message)"
    }
}
if ($read -lt $bytes) {
    throw "The probe file '$file' read back only $read of $bytes bytes"
}

if ($writeSeconds -lt 0.000001) { $writeSeconds = 0.000001 }
if ($readSeconds -lt 0.000001) { $readSeconds = 0.000001 }
$out = [pscustomobject]@{
    path          = $file
    bytes         = $bytes
    write_seconds = [math]::Round($writeSeconds, 4)
    read_seconds  = [math]::Round($readSeconds, 4)
    write_mbps    = [math]::Round($bytes / $writeSeconds / 1000000, 1)
    read_mbps     = [math]::Round($bytes / $readSeconds / 1000000, 1)
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
